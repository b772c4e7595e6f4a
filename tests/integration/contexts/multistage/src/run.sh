#!/bin/sh
cat /app/out.txt
