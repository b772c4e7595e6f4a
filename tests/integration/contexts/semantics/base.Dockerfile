# A base image with ONBUILD triggers: they run when another build uses it in FROM.
ARG BASE
FROM ${BASE}
ENV BASE_ENV=from-base
ONBUILD RUN echo "onbuild saw BASE_ENV=$BASE_ENV" > /onbuild-run.txt
ONBUILD COPY onbuild.txt /onbuild-copied.txt
LABEL base.label=inherited
CMD ["echo", "base-cmd"]
