#!/bin/sh
# Makes airlock's keys for the Helm chart's keys.existingSecret, in DIR (created, mode 0700):
# jwt.key (signs tokens), audit.key (the audit chain's MAC) and anchor.key (signs the chain's
# head), 32 random bytes each, and anchor.pub, the anchor key's Ed25519 public key in hex as
# airlock writes it. The Secret is mounted read-only, so airlock cannot make any of them
# itself; every replica reads the same ones. Needs openssl. Keep DIR off shared disks and
# delete it once the Secret exists.
#
#   sh deploy/helm/make-keys.sh ./airlock-keys
#   kubectl create secret generic airlock-keys --from-file=./airlock-keys
#
# tests/deploy.rs runs it and checks anchor.pub against the one airlock writes.
set -eu
dir=${1:?usage: make-keys.sh DIR}
umask 077
mkdir -p "$dir"
for k in jwt.key audit.key anchor.key anchor.pub; do
  if [ -e "$dir/$k" ]; then
    echo "$dir/$k exists: not overwritten (losing audit.key breaks the audit chain)" >&2
    exit 1
  fi
done
for k in jwt.key audit.key anchor.key; do
  openssl rand -out "$dir/$k" 32
done
# The seed as a PKCS#8 DER Ed25519 private key (RFC 8410 prefix, then the 32 bytes), whose
# public key is the DER's last 32 bytes.
{
  printf '\060\056\002\001\000\060\005\006\003\053\145\160\004\042\004\040'
  cat "$dir/anchor.key"
} | openssl pkey -inform DER -pubout -outform DER | tail -c 32 | od -An -v -tx1 | tr -d ' \n' >"$dir/anchor.pub"
echo >>"$dir/anchor.pub"
echo "made $dir: kubectl create secret generic airlock-keys --from-file=$dir"
