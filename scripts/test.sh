#!/usr/bin/env bash
# Runs the whole airlock test suite on a fresh Debian machine: installs what the tests need,
# then runs formatting, lint, unit and integration tests. Nothing is skipped silently: a
# missing tool makes the run fail, it never quietly drops a test.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests talk to for real:
#   curl        - the plain streaming PUT client
#   python3-tuspy - a third-party tus 1.0.0 client (run with Debian's /usr/bin/python3)
#   b3sum, coreutils (sha256sum) - reference digests
#   chromium, chromium-driver - the real browser the UI tests drive (tests/common/browser.rs)
#   clamav-daemon (clamd), clamdscan - the real ClamAV the scanning tests start on a free port
#     with a one-signature database (scanners/test.hdb); nothing is downloaded
#   python3-aiosmtpd - the real SMTP server the email tests start on a free port
#     (tests/common/smtp_receiver.py, run with Debian's /usr/bin/python3)
#   openssl     - makes the private CA and relay certificate of the STARTTLS and TLS tests
#   rclone      - a plain S3 client, not airlock's, that reads back what airlock put in Garage
#     (tests/common/garage.rs)
#   postgresql  - the real PostgreSQL the replica tests and the PostgreSQL run of the workflow
#     suites start on a free port in a temporary directory (tests/common/pg.rs; initdb and
#     postgres run as the `postgres` user the package creates)
need_pkgs=()
[ -x /usr/sbin/clamd ] || command -v clamd >/dev/null || need_pkgs+=(clamav-daemon)
command -v clamdscan >/dev/null || need_pkgs+=(clamdscan)
command -v curl >/dev/null || need_pkgs+=(curl)
command -v b3sum >/dev/null || need_pkgs+=(b3sum)
# Archive fixtures for the scanner tests (tests/security_scan.rs) are made with the real tools.
command -v xz >/dev/null || need_pkgs+=(xz-utils)
command -v bzip2 >/dev/null || need_pkgs+=(bzip2)
command -v zstd >/dev/null || need_pkgs+=(zstd)
command -v lz4 >/dev/null || need_pkgs+=(lz4)
command -v unzip >/dev/null || need_pkgs+=(unzip)
command -v ar >/dev/null || need_pkgs+=(binutils)
/usr/bin/python3 -c 'import tusclient' 2>/dev/null || need_pkgs+=(python3-tuspy)
# The browser UI tests (tests/ui*.rs) drive Debian's Chromium through its chromedriver.
command -v chromium >/dev/null || need_pkgs+=(chromium)
command -v chromedriver >/dev/null || need_pkgs+=(chromium-driver)
/usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null || need_pkgs+=(python3-aiosmtpd)
command -v openssl >/dev/null || need_pkgs+=(openssl)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_pkgs+=(postgresql)
command -v psql >/dev/null || need_pkgs+=(postgresql-client)
command -v rclone >/dev/null || need_pkgs+=(rclone)
# deploy/ is checked with systemd-analyze verify (tests/deploy.rs).
command -v systemd-analyze >/dev/null || need_pkgs+=(systemd)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "installing: ${need_pkgs[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need_pkgs[@]}"
fi
for tool in curl b3sum sha256sum md5sum clamdscan xz bzip2 zstd lz4 unzip ar tar openssl chromium chromedriver; do
  command -v "$tool" >/dev/null || { echo "missing required tool: $tool" >&2; exit 1; }
done
/usr/bin/python3 -c 'import tusclient' || { echo "python3-tuspy is required" >&2; exit 1; }
/usr/bin/python3 -c 'import aiosmtpd' || { echo "python3-aiosmtpd is required" >&2; exit 1; }
[ -x /usr/sbin/clamd ] || command -v clamd >/dev/null || { echo "clamd (clamav-daemon) is required" >&2; exit 1; }
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || { echo "PostgreSQL (postgresql) is required" >&2; exit 1; }
command -v psql >/dev/null || { echo "psql (postgresql-client) is required" >&2; exit 1; }
command -v rclone >/dev/null || { echo "rclone is required" >&2; exit 1; }
command -v systemd-analyze >/dev/null || { echo "systemd-analyze (systemd) is required" >&2; exit 1; }
# Garage, the real S3 server of the S3 tests (tests/common/garage.rs starts a single node on
# free ports). Built once from crates.io (about 10 minutes), then kept in ~/.cargo/bin.
GARAGE_VERSION=2.5.0
garage_bin="${CARGO_HOME:-$HOME/.cargo}/bin/garage"
if ! { [ -x "$garage_bin" ] && "$garage_bin" --version 2>/dev/null | grep -qF ":$GARAGE_VERSION "; }; then
  echo "installing garage $GARAGE_VERSION (cargo install --locked, about 10 minutes)"
  cargo install --locked "garage@$GARAGE_VERSION"
fi
"$garage_bin" --version >/dev/null || { echo "garage is required" >&2; exit 1; }
# The Debian package may start its own clamd and freshclam services where systemd runs; the
# tests never use them (each test clamd has its own port and database).

# moto's standalone S3 server, the real S3 server with Object Lock of tests/object_lock.rs
# (tests/common/moto.rs starts it on a free port): Garage has no Object Lock, and MinIO is in
# none of the package registries this project can reach. Its own venv, made once and kept.
MOTO_VERSION=5.2.5
moto_venv="$HOME/.cache/airlock-tests/moto-venv"
if ! { [ -x "$moto_venv/bin/moto_server" ] && "$moto_venv/bin/python" -c \
    "import importlib.metadata as m, sys; sys.exit(m.version('moto') != '$MOTO_VERSION')" 2>/dev/null; }; then
  echo "installing moto[server] $MOTO_VERSION into $moto_venv"
  rm -rf "$moto_venv"
  python3 -m venv "$moto_venv"
  "$moto_venv/bin/pip" install --quiet "moto[server]==$MOTO_VERSION"
fi
[ -x "$moto_venv/bin/moto_server" ] || { echo "moto_server (moto[server] $MOTO_VERSION) is required" >&2; exit 1; }

# Helm's own Go SDK as a library (PyPI's helm-python-sdk: libhelm_c, no helm binary, which
# none of the reachable registries has): tests/deploy.rs lints the chart strictly and renders
# it with it (`helm lint --strict`, `helm template`). Its own venv, made once and kept.
HELM_SDK_VERSION=0.2.2
helm_venv="$HOME/.cache/airlock-tests/helm-venv"
if ! "$helm_venv/bin/python" -c \
    "import importlib.metadata as m, sys, helm_python; sys.exit(m.version('helm-python-sdk') != '$HELM_SDK_VERSION')" 2>/dev/null; then
  echo "installing helm-python-sdk $HELM_SDK_VERSION into $helm_venv"
  rm -rf "$helm_venv"
  python3 -m venv "$helm_venv"
  "$helm_venv/bin/pip" install --quiet "helm-python-sdk==$HELM_SDK_VERSION"
fi
"$helm_venv/bin/python" -c 'import helm_python' || { echo "helm-python-sdk $HELM_SDK_VERSION is required" >&2; exit 1; }

# PyPI's bagit (bagit.py) validates the BagIt export; the integrity tests run `python3 -m bagit`.
python3 -c 'import bagit' 2>/dev/null || python3 -m pip install --quiet bagit
python3 -c 'import bagit' || { echo "python bagit is required" >&2; exit 1; }

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
status=0
cargo test --all-targets --no-fail-fast "$@" || status=$?
# The suites again, every server in them on a real PostgreSQL instead of SQLite
# (AIRLOCK_TEST_DATABASE, tests/common/pg.rs; each test database collates as ICU English, so
# byte order is airlock's doing): the store's two backends pass the same tests. Already on
# both backends in the run above: tests/store.rs (the store's conformance suite) and
# tests/replicas.rs (PostgreSQL only, on local disk and on Garage). Not repeated here, being about SQLite itself:
# audit.rs (reads and tampers with the SQLite file) and group_commit.rs (shared WAL fsyncs);
# memory.rs tests the allocator and opens no database.
AIRLOCK_TEST_DATABASE=postgres cargo test --no-fail-fast \
  --test ingress --test egress --test tus --test tokens --test webhooks --test ops_api \
  --test authz --test migrations --test governance --test archive_upload --test client \
  --test mail --test pages --test proxy --test security_people --test security_upa \
  --test security_upb --test security_scan --test security_audit --test scanning \
  --test ui --test ui_browser --test integrity --test crash --test serve --test quickstart \
  --test big --test scale --test metrics --test oidc --test s3 --test object_lock "$@" || status=$?
exit $status
