#!/bin/sh
cat "$APP_HOME/message.txt"
echo "mode: $APP_MODE, files: $(ls "$APP_HOME" | wc -l)"
