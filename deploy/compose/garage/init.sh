#!/bin/sh
# garage-init (compose.yaml): the buckets and keys of a fresh single-node Garage. Safe to run
# again: each step is skipped or repeated harmlessly when its result is already there.
#
#   BUCKET              airlock's bucket (quarantine, output, egress)
#   RELEASED_BUCKET     the released volume's own bucket, the only one the workspace reads
#   AIRLOCK_S3_KEY_ID / AIRLOCK_S3_SECRET        airlock's key: read and write, both buckets
#   WORKSPACE_S3_KEY_ID / WORKSPACE_S3_SECRET    the workspace's key: read, RELEASED_BUCKET only
#
# Garage grants a key a whole bucket (no per-prefix rights), which is why released objects
# live in a bucket of their own: a key on BUCKET would also read quarantine (unreviewed
# uploads). The layout was assigned by `garage server --single-node`.
set -eu

tries=0
until garage status >/dev/null 2>&1; do
  tries=$((tries + 1))
  [ "$tries" -lt 60 ] || { garage status; exit 1; }
  sleep 1
done

for b in "$BUCKET" "$RELEASED_BUCKET"; do
  garage bucket info "$b" >/dev/null 2>&1 || garage bucket create "$b"
done

garage key info "$AIRLOCK_S3_KEY_ID" >/dev/null 2>&1 ||
  garage key import --yes -n airlock "$AIRLOCK_S3_KEY_ID" "$AIRLOCK_S3_SECRET"
for b in "$BUCKET" "$RELEASED_BUCKET"; do
  garage bucket allow --read --write --key "$AIRLOCK_S3_KEY_ID" "$b"
done

garage key info "$WORKSPACE_S3_KEY_ID" >/dev/null 2>&1 ||
  garage key import --yes -n workspace-read-only "$WORKSPACE_S3_KEY_ID" "$WORKSPACE_S3_SECRET"
garage bucket allow --read --key "$WORKSPACE_S3_KEY_ID" "$RELEASED_BUCKET"
# Never more than reading, whatever an earlier run or a hand granted.
garage bucket deny --write --owner --key "$WORKSPACE_S3_KEY_ID" "$RELEASED_BUCKET"
garage bucket deny --read --write --owner --key "$WORKSPACE_S3_KEY_ID" "$BUCKET"

echo "garage-init: buckets $BUCKET and $RELEASED_BUCKET, airlock's key, the workspace's read-only key"
