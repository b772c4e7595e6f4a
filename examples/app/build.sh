#!/bin/sh
# A stand-in for a compile step: generate a few files into $1.
set -e
out="$1"
i=0
while [ $i -lt 5 ]; do
    echo "generated file $i" > "$out/gen_$i.txt"
    i=$((i + 1))
done
ln -sf message.txt "$out/latest.txt"
