#!/usr/bin/env bash
# Installs, upgrades or removes the snapmesh agent as a systemd service.
# Usage: scripts/install.sh --help
#
# Exit codes as for snapmesh itself: 0 success, 1 failed, 2 bad usage.
set -euo pipefail
umask 022

PROG=install.sh
SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO=$(dirname -- "$SCRIPT_DIR")

# Where things live on the installed system. --root DESTDIR prefixes every one
# of them on disk; the unit and the wrapper always name the real paths.
BIN=/usr/local/bin/snapmesh
BIN_DIR=/usr/local/bin
PREVIOUS=$BIN.previous
APP_DIR=/opt/snapmesh
CACHE_DIR=/var/cache/snapmesh
CONF_DIR=/etc/snapmesh
CONFIG=$CONF_DIR/config.json
ENV_FILE=$CONF_DIR/env
DATA_DIR=/var/lib/snapmesh
UNIT_DIR=/etc/systemd/system
UNIT=$UNIT_DIR/snapmesh.service
DROPIN_DIR=$UNIT_DIR/snapmesh.service.d
SERVICE=snapmesh
SERVICE_USER=snapmesh
LISTEN=0.0.0.0:7070
# In /opt/snapmesh: this script put the tree there (uninstall may remove it).
APP_MARKER=.installed-by-snapmesh
# The first line of the --from-source wrapper after the shebang.
WRAPPER_MARK="# snapmesh from source, written by scripts/install.sh"

usage() {
  cat <<'EOF'
Usage: scripts/install.sh [--binary PATH | --from-source] [--root DESTDIR] [--no-start]
       scripts/install.sh --uninstall [--purge] [--root DESTDIR]

Installs the snapmesh agent as the systemd service "snapmesh" (run as root).
Running it again upgrades. The new binary (or sources and wrapper) is staged
first, under a temporary name, and checked: it must run, it must accept the
existing /etc/snapmesh/config.json ('serve --config ... --print-config', with
the variables of /etc/snapmesh/env), and the new unit must pass
systemd-analyze verify. If a check fails, nothing is changed (exit 1). Then the
binary is renamed into place (the one it replaces is kept as
snapmesh.previous), the unit is rewritten, the config and env files are kept,
and the service is restarted (SIGTERM: the agent drains and checkpoints before
it exits) and watched for 5 s; if it does not stay active: exit 1.

What it installs:
  /usr/local/bin/snapmesh   the binary (or the --from-source wrapper), 0755
  /usr/local/bin/snapmesh.previous
                            the binary the last upgrade replaced, for a manual rollback:
                              mv /usr/local/bin/snapmesh.previous /usr/local/bin/snapmesh
                              systemctl restart snapmesh
                            (none when the replaced file was a --from-source wrapper:
                            roll those back by reinstalling from the older checkout)
  /etc/snapmesh/config.json commented config from 'snapmesh serve --config-template',
                            0644; never overwritten (a newer template goes to config.json.new)
  /etc/snapmesh/env         0600, never overwritten. Created with SNAPMESH_TOKEN set to a
                            new random token (the bearer token for /v1; it is never printed):
                            every node of a cluster and every client must use the same
                            token, so copy it to the other nodes' env files or replace it
                            with the cluster's. AWS_* credentials are there commented out.
  /var/lib/snapmesh         the data directory, 0750, owned by the system user snapmesh
  /etc/systemd/system/snapmesh.service
                            the unit, checked with systemd-analyze verify
  /opt/snapmesh, /var/cache/snapmesh
                            sources (marked by /opt/snapmesh/.installed-by-snapmesh) and
                            their Deno cache (--from-source only)

Options:
  --binary PATH     install this compiled snapmesh (default: dist/snapmesh of this
                    repository, built by 'deno task compile', when it exists)
  --from-source     no binary: copy mod.ts, src/, deno.json and deno.lock to /opt/snapmesh,
                    cache their dependencies in /var/cache/snapmesh, and install a wrapper
                    that runs them with Deno and the permission flags of the 'start' task
  --root DESTDIR    install under DESTDIR (packaging, tests): no user is created, nothing is
                    chowned, systemctl is not called; files name the real paths, so the tree
                    can be copied to / as it is
  --no-start        do not enable or (re)start the service (systemctl daemon-reload still runs)
  --uninstall       stop and disable the service (if that fails: exit 1, nothing removed);
                    remove the unit, the binary and snapmesh.previous; remove /opt/snapmesh
                    and /var/cache/snapmesh only when they hold what an install put there
                    (kept, with a warning: /opt/snapmesh without its marker, and
                    /var/cache/snapmesh holding LOCK, journal/ or snapshots/, i.e. a data
                    directory); keep /etc/snapmesh, the unit's drop-ins
                    (/etc/systemd/system/snapmesh.service.d), /var/lib/snapmesh and the user
  --purge           with --uninstall: also remove /etc/snapmesh, the drop-ins,
                    /var/lib/snapmesh, /opt/snapmesh and /var/cache/snapmesh (whatever they
                    hold) and the user
  -h, --help        this text

Environment:
  SNAPMESH_DENO_DIR  --from-source: the Deno cache to fill and run from instead of
                     /var/cache/snapmesh (the wrapper honours it too); meant for --root trees
EOF
}

say() { printf '%s: %s\n' "$PROG" "$*"; }
warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }
die() {
  printf '%s: %s\n' "$PROG" "$*" >&2
  exit 1
}
usage_error() {
  printf '%s: %s\nTry: %s --help\n' "$PROG" "$*" "$0" >&2
  exit 2
}

# Temp files and directories removed on exit, whatever happens.
TEMPS=()
cleanup() {
  local path
  for path in "${TEMPS[@]+"${TEMPS[@]}"}"; do rm -rf -- "$path"; done
}
trap cleanup EXIT

# --- arguments ---------------------------------------------------------------

binary=""
from_source=0
destdir=""
root_given=0
no_start=0
uninstall=0
purge=0

need_value() { [ "$#" -ge 2 ] && [ -n "$2" ] || usage_error "$1 needs a value"; }

while [ "$#" -gt 0 ]; do
  case $1 in
    --binary)
      need_value "$@"
      binary=$2
      shift
      ;;
    --binary=*) binary=${1#*=} ;;
    --from-source) from_source=1 ;;
    --root)
      need_value "$@"
      destdir=$2
      root_given=1
      shift
      ;;
    --root=*)
      destdir=${1#*=}
      root_given=1
      ;;
    --no-start) no_start=1 ;;
    --uninstall) uninstall=1 ;;
    --purge) purge=1 ;;
    -h | --help)
      usage
      exit 0
      ;;
    *) usage_error "unknown argument: $1" ;;
  esac
  shift
done

[ "$root_given" = 0 ] || [ -n "$destdir" ] || usage_error "--root needs a directory"
[ -z "$binary" ] || [ "$from_source" = 0 ] || usage_error "--binary and --from-source exclude each other"
[ "$purge" = 0 ] || [ "$uninstall" = 1 ] || usage_error "--purge only goes with --uninstall"
if [ "$uninstall" = 1 ] && { [ -n "$binary" ] || [ "$from_source" = 1 ] || [ "$no_start" = 1 ]; }; then
  usage_error "--uninstall takes only --purge and --root"
fi

if [ -n "$destdir" ]; then
  mkdir -p -- "$destdir" || die "cannot create --root directory $destdir"
  destdir=$(cd -- "$destdir" && pwd -P)
  destdir=${destdir%/} # --root / is a normal install
fi
D=$destdir

if [ -z "$D" ] && [ "$(id -u)" -ne 0 ]; then
  die "must run as root (or with --root DESTDIR to install into a directory)"
fi

systemd_running() { [ -z "$D" ] && [ -d /run/systemd/system ]; }
have_user() { getent passwd "$SERVICE_USER" >/dev/null 2>&1; }

# --- helpers -----------------------------------------------------------------

# Writes stdin to $1 with mode $2 atomically: a temp file in the same
# directory, then rename, so readers (and a running agent) never see half a file.
# mktemp creates the temp file with mode 0600, so secrets are never exposed.
write_atomic() {
  local dest=$1 mode=$2 tmp
  tmp=$(mktemp "$(dirname -- "$dest")/.$(basename -- "$dest").XXXXXX")
  TEMPS+=("$tmp")
  cat >"$tmp"
  chmod "$mode" "$tmp"
  mv -f -- "$tmp" "$dest"
}

# Copies $1 to $2 with mode $3, atomically (see write_atomic). Replacing a
# running executable this way is safe: the old process keeps the old inode.
install_atomic() {
  write_atomic "$2" "$3" <"$1"
}

# Quotes a word for a bash script: bare when safe, else in single quotes.
shell_word() {
  if [[ $1 =~ ^[A-Za-z0-9_./=:,+@%-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# Quotes a word for a command line in a systemd unit (ExecStart=): in double
# quotes, with \ and " escaped, % written %% (specifiers) and $ written $$
# (variable expansion).
systemd_word() {
  local word=$1
  word=${word//\\/\\\\}
  word=${word//\"/\\\"}
  word=${word//[%]/%%}
  word=${word//[\$]/\$\$}
  printf '"%s"' "$word"
}

# True when $1 is the wrapper written by --from-source (not a binary).
is_wrapper() {
  local start
  [ -f "$1" ] || return 1
  start=$(head -c 512 -- "$1" 2>/dev/null | tr -d '\0') || return 1
  [[ $start == *"$WRAPPER_MARK"* ]]
}

# True when the directory $1 (/opt/snapmesh) holds what --from-source put
# there: it has the marker, or (an install by an older install.sh, without
# the marker) exactly the copied sources and nothing else.
app_dir_is_ours() {
  local dir=$1 entry
  [ -d "$dir" ] || return 1
  [ ! -f "$dir/$APP_MARKER" ] || return 0
  [ -f "$dir/mod.ts" ] && [ -f "$dir/deno.json" ] || return 1
  for entry in "$dir"/* "$dir"/.[!.]* "$dir"/..?*; do
    [ -e "$entry" ] || [ -L "$entry" ] || continue # an unmatched pattern
    case ${entry##*/} in
      mod.ts | src | deno.json | deno.lock) ;;
      *) return 1 ;;
    esac
  done
}

# True when the directory $1 (/var/cache/snapmesh) is a Deno cache, not a
# snapmesh data directory (an operator may have pointed data-dir there).
cache_dir_is_ours() {
  local name
  [ -d "$1" ] || return 1
  for name in LOCK journal snapshots; do
    if [ -e "$1/$name" ] || [ -L "$1/$name" ]; then return 1; fi
  done
}

# Removes /opt/snapmesh and /var/cache/snapmesh when they hold only what a
# --from-source install put there; warns about and keeps anything else.
# Appends what it removed to the array REMOVED.
REMOVED=()
remove_source_tree() {
  if [ -e "$D$APP_DIR" ] || [ -L "$D$APP_DIR" ]; then
    if app_dir_is_ours "$D$APP_DIR"; then
      rm -rf -- "$D$APP_DIR"
      REMOVED+=("$D$APP_DIR")
    else
      warn "kept $D$APP_DIR: it has no $APP_MARKER and holds more than the sources" \
        "this script installs; remove it yourself if nothing needs it"
    fi
  fi
  if [ -e "$D$CACHE_DIR" ] || [ -L "$D$CACHE_DIR" ]; then
    if cache_dir_is_ours "$D$CACHE_DIR"; then
      rm -rf -- "$D$CACHE_DIR"
      REMOVED+=("$D$CACHE_DIR")
    else
      warn "kept $D$CACHE_DIR: it holds LOCK, journal/ or snapshots/, so it looks like a" \
        "snapmesh data directory, not the Deno cache; remove it yourself (or with --uninstall --purge)"
    fi
  fi
}

# Exports the variables of a systemd EnvironmentFile= ($1) into the current
# shell: call it in a subshell only. The file is parsed, not sourced (nothing
# in it runs, and "KEY=a b" means what it means to systemd); values are never
# printed.
load_env_file() {
  local line name value
  while IFS= read -r line || [ -n "$line" ]; do
    line=${line#"${line%%[![:space:]]*}"}
    case $line in '' | '#'* | ';'*) continue ;; esac
    [[ $line =~ ^([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*=[[:space:]]*(.*)$ ]] || continue
    name=${BASH_REMATCH[1]}
    value=${BASH_REMATCH[2]}
    value=${value%"${value##*[![:space:]]}"}
    if [[ $value =~ ^\"(.*)\"$ ]] || [[ $value =~ ^\'(.*)\'$ ]]; then value=${BASH_REMATCH[1]}; fi
    export "$name=$value"
  done <"$1"
}

# Unsets every exported variable of the current shell (a subshell only) but
# PATH, so a command sees the environment the service would.
clear_env() {
  local name
  while IFS= read -r name; do
    unset "$name" 2>/dev/null || true
  done < <(compgen -e)
  export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
}

# --- uninstall -----------------------------------------------------------------

uninstall_all() {
  local out path
  if systemd_running && [ -e "$UNIT" ]; then
    # stop waits for the agent's graceful exit (TimeoutStopSec). If it fails,
    # the agent may still run: do not delete its binary from under it.
    if ! out=$(systemctl disable --now "$SERVICE" 2>&1); then
      die "systemctl disable --now $SERVICE failed; nothing was removed:
${out:-no output}
  Check: systemctl status $SERVICE; journalctl -u $SERVICE"
    fi
    systemctl reset-failed "$SERVICE" >/dev/null 2>&1 || true
    say "stopped and disabled $SERVICE"
  elif [ -z "$D" ]; then
    say "systemd is not running here: nothing to stop"
  fi

  REMOVED=()
  for path in "$D$UNIT" "$D$BIN" "$D$PREVIOUS"; do
    if [ -e "$path" ] || [ -L "$path" ]; then
      rm -rf -- "$path"
      REMOVED+=("$path")
    fi
  done
  # --purge removes these whatever they hold, below.
  [ "$purge" = 1 ] || remove_source_tree
  if systemd_running; then systemctl daemon-reload; fi
  if [ "${#REMOVED[@]}" -gt 0 ]; then
    say "removed ${REMOVED[*]}"
  else
    say "nothing to remove: snapmesh was not installed"
  fi

  if [ "$purge" = 1 ]; then
    REMOVED=()
    for path in "$D$CONF_DIR" "$D$DROPIN_DIR" "$D$DATA_DIR" "$D$APP_DIR" "$D$CACHE_DIR"; do
      if [ -e "$path" ] || [ -L "$path" ]; then
        rm -rf -- "$path"
        REMOVED+=("$path")
      fi
    done
    if [ "${#REMOVED[@]}" -gt 0 ]; then
      say "purged ${REMOVED[*]}"
      if systemd_running; then systemctl daemon-reload; fi
    fi
    if [ -z "$D" ] && have_user; then
      if userdel "$SERVICE_USER"; then
        say "removed the user $SERVICE_USER"
      else
        warn "userdel $SERVICE_USER failed: remove the user yourself"
      fi
    fi
  else
    local kept=()
    [ ! -e "$D$CONF_DIR" ] || kept+=("$D$CONF_DIR (config and env with secrets)")
    [ ! -e "$D$DROPIN_DIR" ] || kept+=("$D$DROPIN_DIR (drop-ins of the unit)")
    [ ! -e "$D$DATA_DIR" ] || kept+=("$D$DATA_DIR (cached snapshots)")
    if [ -z "$D" ] && have_user; then kept+=("the user $SERVICE_USER"); fi
    if [ "${#kept[@]}" -gt 0 ]; then
      local item
      say "kept (remove with --uninstall --purge):"
      for item in "${kept[@]}"; do printf '  %s\n' "$item"; done
    fi
  fi
}

if [ "$uninstall" = 1 ]; then
  uninstall_all
  exit 0
fi

# --- what to install -----------------------------------------------------------

deno_bin=""
if [ "$from_source" = 1 ]; then
  deno_bin=$(command -v deno || true)
  [ -n "$deno_bin" ] || die "--from-source needs deno on PATH (install Deno 2: npm install -g deno)"
  case $deno_bin in
    /*) ;;
    *) die "deno on PATH is not a file ($deno_bin)" ;;
  esac
  case $deno_bin in
    /root/* | /home/*)
      warn "deno is $deno_bin: the service user cannot run it there (home directories are" \
        "closed to it and ProtectHome=read-only); install Deno system-wide, e.g. npm install -g deno"
      ;;
  esac
  for path in mod.ts src deno.json deno.lock; do
    [ -e "$REPO/$path" ] || die "--from-source: $REPO/$path is missing (run this script from a snapmesh checkout)"
  done
  if { [ -e "$D$APP_DIR" ] || [ -L "$D$APP_DIR" ]; } && ! app_dir_is_ours "$D$APP_DIR"; then
    die "$D$APP_DIR exists but was not installed by this script (no $APP_MARKER, and it holds
  more than the sources): move it away first. Nothing was changed."
  fi
else
  if [ -z "$binary" ]; then
    if [ -x "$REPO/dist/snapmesh" ]; then
      binary=$REPO/dist/snapmesh
    else
      die "no snapmesh binary to install: $REPO/dist/snapmesh does not exist.
  Build one with 'deno task compile' (or give --binary PATH),
  or install from source with --from-source (needs Deno on this machine)."
    fi
  fi
  [ -f "$binary" ] || die "--binary $binary: no such file"
  [ -x "$binary" ] || die "--binary $binary: not executable"
  # A file that does not answer --version like snapmesh is not worth installing.
  answer=$(timeout 30 "$binary" --version </dev/null 2>/dev/null | head -n 1 || true)
  case $answer in
    "snapmesh "*) say "installing $binary ($answer)" ;;
    *) die "--binary $binary does not run as snapmesh (--version answered '${answer:0:60}')" ;;
  esac
fi

if [ -n "${SNAPMESH_DENO_DIR:-}" ] && [ -z "$D" ] && [ "$from_source" = 1 ]; then
  warn "SNAPMESH_DENO_DIR=$SNAPMESH_DENO_DIR: dependencies are cached there, but the service" \
    "runs from $CACHE_DIR without that variable and may need the network to start"
fi

mkdir -p -- "$D$BIN_DIR"

# --- stage the new snapmesh (nothing installed is changed yet) ---------------------
#
# staged: the new binary, or the new wrapper, under a temp name next to $BIN.
# new_cmd: the command that runs the new snapmesh from where it is staged.

staged=$(mktemp "$D$BIN_DIR/.snapmesh.new.XXXXXX")
TEMPS+=("$staged")
new_cmd=()
stage=""    # --from-source: the new tree, next to $APP_DIR
deno_dir="" # --from-source: the Deno cache filled and used

wrapper_text() {
  cat <<EOF
#!/usr/bin/env bash
$WRAPPER_MARK --from-source (reinstalling
# replaces it). Runs $APP_DIR/mod.ts with Deno and the permission flags of the
# 'start' task in deno.json, passing every argument through ('snapmesh serve ...',
# 'snapmesh ls', ...).
#
# Paths are found from where this file is (<root>$BIN runs
# <root>$APP_DIR), so a tree installed with --root DESTDIR runs in place
# and the same tree copied to / runs from $APP_DIR.
set -euo pipefail
self=\$(readlink -f -- "\${BASH_SOURCE[0]}")
root=\$(cd -- "\${self%/*}/../../.." && pwd -P)
root=\${root%/}
app=\$root$APP_DIR
if [ ! -f "\$app/mod.ts" ]; then
  echo "snapmesh: \$app/mod.ts is missing; reinstall with scripts/install.sh --from-source" >&2
  exit 1
fi
# The dependencies were cached here at install time: starting needs no network.
export DENO_DIR="\${SNAPMESH_DENO_DIR:-\$root$CACHE_DIR}"
export DENO_NO_UPDATE_CHECK=1 DENO_NO_PROMPT=1
exec $(shell_word "$deno_bin") run --config "\$app/deno.json"$1 "\$app/mod.ts" "\$@"
EOF
}

stage_sources() {
  local flags=() flag words=""
  # The same parsing as serveFlags() in scripts/flags.ts. That module is not
  # imported: it turns its own file URL into a path without decoding it, so it
  # fails in a checkout whose path holds a space, # or %. The path comes in
  # through the environment and is only ever used as a path, never in a URL.
  mapfile -t flags < <(cd / && _SNAPMESH_REPO=$REPO "$deno_bin" eval --no-config '
    const path = `${Deno.env.get("_SNAPMESH_REPO")}/deno.json`;
    const start = JSON.parse(Deno.readTextFileSync(path)).tasks.start;
    const match = /^deno run (.*) mod\.ts serve$/.exec(start);
    if (!match) throw new Error(`Unexpected start task in ${path}: ${start}`);
    for (const flag of match[1].split(/\s+/)) console.log(flag.replace(/^'"'"'(.*)'"'"'$/, "$1"));')
  [ "${#flags[@]}" -gt 0 ] || die "could not read the start task's flags from $REPO/deno.json"
  for flag in "${flags[@]}"; do
    case $flag in --*) ;; *) die "unexpected flag '$flag' in deno.json's start task" ;; esac
    words+=" $(shell_word "$flag")"
  done

  mkdir -p -- "$D$(dirname -- "$APP_DIR")" "$D$CACHE_DIR"
  chmod 0755 "$D$CACHE_DIR"
  stage=$(mktemp -d "$D$(dirname -- "$APP_DIR")/.snapmesh.new.XXXXXX")
  TEMPS+=("$stage")
  cp -R -- "$REPO/mod.ts" "$REPO/src" "$REPO/deno.json" "$REPO/deno.lock" "$stage/"
  printf '%s\n' "Installed by scripts/install.sh --from-source; --uninstall removes this directory." \
    >"$stage/$APP_MARKER"
  chmod -R u=rwX,go=rX "$stage"

  # Fetch every dependency now (into the stage, so a failure changes nothing),
  # so the service never needs the network to start.
  deno_dir=${SNAPMESH_DENO_DIR:-$D$CACHE_DIR}
  # Deno's transpile cache for the staged paths is of no use once they move.
  TEMPS+=("$deno_dir/gen/file$stage")
  say "caching dependencies in $deno_dir (deno cache)"
  DENO_DIR=$deno_dir DENO_NO_UPDATE_CHECK=1 "$deno_bin" cache --quiet \
    --config "$stage/deno.json" "$stage/mod.ts" ||
    die "deno cache failed: the dependencies could not be fetched; nothing was changed"

  new_cmd=(env "DENO_DIR=$deno_dir" DENO_NO_UPDATE_CHECK=1 DENO_NO_PROMPT=1
    "$deno_bin" run --config "$stage/deno.json" "${flags[@]}" "$stage/mod.ts")
  wrapper_text "$words" >"$staged"
  chmod 0755 "$staged"
}

if [ "$from_source" = 1 ]; then
  stage_sources
else
  cat -- "$binary" >"$staged"
  chmod 0755 "$staged"
  new_cmd=("$staged")
fi

version=$(cd / && timeout 300 "${new_cmd[@]}" --version </dev/null | head -n 1) ||
  die "the new snapmesh does not run (--version failed); nothing was changed"
case $version in
  "snapmesh "*) ;;
  *) die "the new snapmesh answered --version with '${version:0:60}'; nothing was changed" ;;
esac

# An upgrade: the new snapmesh must accept the config in place, with the
# environment the service gets (the env file's variables, nothing else).
if [ -e "$D$CONFIG" ]; then
  if ! check=$(
    (
      clear_env
      if [ -r "$D$ENV_FILE" ]; then load_env_file "$D$ENV_FILE"; fi
      cd / && timeout 120 "${new_cmd[@]}" serve --config "$D$CONFIG" --print-config </dev/null
    ) 2>&1 >/dev/null
  ); then
    die "the new snapmesh ($version) does not accept $D$CONFIG; nothing was changed.
'snapmesh serve --config $CONFIG --print-config' said:
$(tail -n 20 <<<"${check:-(nothing)}" | sed 's/^/  /')
Fix the config (the new version's template: 'snapmesh serve --config-template' of the
new binary), then install again."
  fi
  say "the new snapmesh accepts $D$CONFIG"
fi

template=$(mktemp)
TEMPS+=("$template")
(cd / && timeout 120 "${new_cmd[@]}" serve --config-template --data-dir "$DATA_DIR" --listen "$LISTEN" </dev/null) \
  >"$template" || die "snapmesh serve --config-template failed; nothing was changed"
[ -s "$template" ] || die "snapmesh serve --config-template printed nothing; nothing was changed"

# --- the unit, verified before anything is replaced ----------------------------------

rw_paths=$DATA_DIR
[ "$from_source" = 0 ] || rw_paths+=" $CACHE_DIR"

unit_text() {
  cat <<EOF
# snapmesh agent: caches VM snapshots for Firecracker on this node.
# Written by scripts/install.sh ($version); reinstalling overwrites this file.
# Settings: $CONFIG. Secrets: $ENV_FILE. Anything here: a drop-in
# (systemctl edit $SERVICE), which reinstalling keeps.
#
# Stop and restart (the upgrade path) send SIGTERM to the agent alone
# (KillMode=mixed): it stops accepting, ends pulls, gives uploads 5 s,
# checkpoints and exits 0 within 30 s; TimeoutStopSec=45 leaves room before
# SIGKILL. Exit code 2 is a bad config: restarting would not fix it.
# ProtectSystem=strict leaves only ReadWritePaths writable: a data-dir moved
# in the config must be added there with a drop-in.

[Unit]
Description=snapmesh VM snapshot cache agent
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
User=$SERVICE_USER
Group=$SERVICE_USER
EnvironmentFile=-$ENV_FILE
ExecStart=$BIN serve --config $CONFIG
Restart=on-failure
RestartSec=2
RestartPreventExitStatus=2
KillSignal=SIGTERM
KillMode=mixed
TimeoutStopSec=45
LimitNOFILE=65536
UMask=0027

# Hardening. No MemoryDenyWriteExecute=: V8 compiles code at run time.
# No capabilities at all: the agent binds its port as an unprivileged user
# (use a port above 1023) and needs none. Sockets: TCP (peers, clients,
# the origin), Unix (restore sockets) and netlink (name resolution).
# Key and certificate files stay readable under ProtectSystem=strict.
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
ReadWritePaths=$rw_paths
ProtectHome=read-only
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
SystemCallArchitectures=native
LockPersonality=yes

[Install]
WantedBy=multi-user.target
EOF
}

# systemd-analyze verify checks that ExecStart exists, so it reads a copy
# whose ExecStart names $2, the staged binary or wrapper (quoted for systemd:
# DESTDIR may hold spaces or %). "--root=" is not used: on systemd 252 it also
# looks for sysinit.target and friends inside DESTDIR.
# It exits 0 on unknown keys and bad values, so any line naming the unit fails too.
verify_unit() {
  local unit=$1 exec_path=$2 dir out line sanity
  if ! command -v systemd-analyze >/dev/null 2>&1; then
    warn "systemd-analyze not found: the unit was not verified"
    return 0
  fi
  dir=$(mktemp -d)
  TEMPS+=("$dir")
  sanity=$dir/install-sanity-check.service
  printf '[Service]\nExecStart=%s\n' "$(type -P true)" >"$sanity"
  if ! out=$(systemd-analyze verify "$sanity" 2>&1); then
    warn "systemd-analyze verify does not work here (${out:-no output}); the unit was not verified"
    return 0
  fi
  while IFS= read -r line; do
    if [[ $line == "ExecStart=$BIN "* ]]; then
      line="ExecStart=$(systemd_word "$exec_path") ${line#"ExecStart=$BIN "}"
    fi
    printf '%s\n' "$line"
  done <"$unit" >"$dir/$SERVICE.service"
  if ! out=$(systemd-analyze verify "$dir/$SERVICE.service" 2>&1) ||
    grep -q "$SERVICE.service" <<<"$out"; then
    die "the unit does not pass systemd-analyze verify; nothing was changed:
$out"
  fi
  [ -z "$out" ] || say "systemd-analyze verify (about other units): $out"
  say "unit verified with systemd-analyze verify"
}

unit_tmp=$(mktemp)
TEMPS+=("$unit_tmp")
unit_text >"$unit_tmp"
verify_unit "$unit_tmp" "$staged"

# --- switch: keep the previous binary, rename the new one into place ----------------

if [ -f "$D$BIN" ] && ! is_wrapper "$D$BIN"; then
  # A hard link: the old binary's inode stays as it is, under a second name.
  rm -f -- "$D$PREVIOUS"
  ln -- "$D$BIN" "$D$PREVIOUS" 2>/dev/null || cp -p -- "$D$BIN" "$D$PREVIOUS"
  say "kept the previous binary as $D$PREVIOUS (rollback: mv $PREVIOUS $BIN && systemctl restart $SERVICE)"
elif [ -e "$D$PREVIOUS" ] || [ -L "$D$PREVIOUS" ]; then
  # Not what this upgrade replaced: a rollback to it would surprise.
  rm -f -- "$D$PREVIOUS"
  say "removed $D$PREVIOUS (older than the install it would roll back to)"
fi

if [ "$from_source" = 1 ]; then
  # Swap the trees: two renames, so the window without $APP_DIR is tiny.
  if [ -e "$D$APP_DIR" ] || [ -L "$D$APP_DIR" ]; then
    old=$(mktemp -d "$D$(dirname -- "$APP_DIR")/.snapmesh.old.XXXXXX")
    TEMPS+=("$old")
    mv -- "$D$APP_DIR" "$old/"
  fi
  mv -- "$stage" "$D$APP_DIR"
  say "installed the sources in $D$APP_DIR"
  mv -f -- "$staged" "$D$BIN"
  say "installed the wrapper $D$BIN (deno: $deno_bin)"
else
  mv -f -- "$staged" "$D$BIN"
  say "installed $D$BIN"
  # Switching from a source install: its tree and cache are no longer used.
  REMOVED=()
  remove_source_tree
  for path in "${REMOVED[@]+"${REMOVED[@]}"}"; do
    say "removed $path (left from a --from-source install)"
  done
fi

# Also a check that what was just installed runs (and, from source, the first
# run that fills Deno's transpile cache for the installed paths).
installed_version=$(cd / && "$D$BIN" --version </dev/null | head -n 1) ||
  die "$D$BIN --version failed: the installed snapmesh does not run"
say "$D$BIN answers: $installed_version"

mkdir -p -- "$D$CONF_DIR" "$D$UNIT_DIR" "$D$DATA_DIR"

# --- config and env ----------------------------------------------------------------

if [ -e "$D$CONFIG" ]; then
  if cmp -s -- "$template" "$D$CONFIG"; then
    rm -f -- "$D$CONFIG.new"
    say "kept $D$CONFIG (same as the current template)"
  else
    write_atomic "$D$CONFIG.new" 0644 <"$template"
    say "kept $D$CONFIG (never overwritten); the current template is in $D$CONFIG.new:"
    say "  diff -u $D$CONFIG $D$CONFIG.new"
  fi
else
  write_atomic "$D$CONFIG" 0644 <"$template"
  say "wrote $D$CONFIG"
fi

if [ -e "$D$ENV_FILE" ]; then
  say "kept $D$ENV_FILE"
  mode=$(stat -c %a -- "$D$ENV_FILE")
  [ "$mode" = 600 ] || [ "$mode" = 400 ] ||
    warn "$D$ENV_FILE has mode $mode; it holds secrets: chmod 600 $D$ENV_FILE"
  if [ -r "$D$ENV_FILE" ] && ! grep -Eq '^[[:space:]]*SNAPMESH_TOKEN[[:space:]]*=[[:space:]]*[^[:space:]]' "$D$ENV_FILE"; then
    warn "$D$ENV_FILE sets no SNAPMESH_TOKEN: unless a token is set elsewhere, /v1 on" \
      "$LISTEN is open to anyone who can reach it; add the cluster's token there"
  fi
else
  # 32 random bytes in hex: no character a shell or systemd would interpret.
  token=$(head -c 32 /dev/urandom | od -An -v -tx1 | tr -d ' \n') || token=""
  [[ $token =~ ^[0-9a-f]{64}$ ]] || die "could not read 32 random bytes from /dev/urandom"
  write_atomic "$D$ENV_FILE" 0600 <<EOF
# snapmesh agent environment, read by systemd (EnvironmentFile= in
# snapmesh.service). Secrets belong here, not in config.json: this file is
# mode 0600. After a change: systemctl restart snapmesh
# Any SNAPMESH_<FLAG> variable (SNAPMESH_CACHE_SIZE=200GiB, ...) overrides config.json.

# Bearer token for /v1, generated at random when this file was written.
# Every node of a cluster and every client must use the same token: copy this
# line to the env file of the other nodes (and restart them), or replace it
# with the token your cluster already uses. Clients pass it with --token or
# SNAPMESH_TOKEN. Without a token, /v1 is open to anyone who can reach the port.
SNAPMESH_TOKEN=$token

# Node-to-node credentials (README "Security"): the same cluster key on every
# node makes peers sign their requests, and client tokens then no longer open
# /v1/peer/*. Generate one with: openssl rand -base64 48
# SNAPMESH_CLUSTER_KEY=
# A read-only client token (reads and pulls only), for workers that only restore:
# SNAPMESH_READ_TOKEN=

# Credentials of the S3/MinIO origin (the standard AWS variables):
# AWS_ACCESS_KEY_ID=
# AWS_SECRET_ACCESS_KEY=
EOF
  unset token
  say "wrote $D$ENV_FILE (mode 0600) with a new random SNAPMESH_TOKEN (not shown: read it there);"
  say "  every node of the cluster and every client must use the same token; AWS_* go there too"
fi

# --- user, data directory, cache ownership --------------------------------------------

chmod 0755 "$D$CONF_DIR"
chmod 0750 "$D$DATA_DIR"
if [ -n "$D" ]; then
  say "--root: no user created and nothing chowned; on the target run:"
  say "  useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin $SERVICE_USER"
  if [ "$from_source" = 1 ]; then
    say "  chown $SERVICE_USER:$SERVICE_USER $DATA_DIR && chown -R $SERVICE_USER:$SERVICE_USER $CACHE_DIR"
  else
    say "  chown $SERVICE_USER:$SERVICE_USER $DATA_DIR"
  fi
else
  if ! have_user; then
    command -v useradd >/dev/null 2>&1 || die "useradd not found: create the system user $SERVICE_USER yourself"
    nologin=/usr/sbin/nologin
    [ -x "$nologin" ] || nologin=/sbin/nologin
    [ -x "$nologin" ] || nologin=/bin/false
    group_opt=(--user-group)
    if getent group "$SERVICE_USER" >/dev/null 2>&1; then group_opt=(--gid "$SERVICE_USER"); fi
    useradd --system "${group_opt[@]}" --no-create-home --home-dir /nonexistent \
      --shell "$nologin" "$SERVICE_USER"
    say "created the system user $SERVICE_USER"
  fi
  chown "$SERVICE_USER:$SERVICE_USER" "$DATA_DIR"
  # Files another user left in the data dir (say, an agent once run as root)
  # would stop the service: say so rather than chown a whole cache unasked.
  stray=$(find "$DATA_DIR" -xdev ! -user "$SERVICE_USER" -print -quit 2>/dev/null || true)
  [ -z "$stray" ] ||
    warn "$stray (and maybe more) is not owned by $SERVICE_USER: chown -R $SERVICE_USER:$SERVICE_USER $DATA_DIR"
  if [ "$from_source" = 1 ] && [ -z "${SNAPMESH_DENO_DIR:-}" ]; then
    # Deno writes its transpile cache as the service runs.
    chown -R "$SERVICE_USER:$SERVICE_USER" "$CACHE_DIR"
  fi
fi
say "data directory $D$DATA_DIR (mode 0750)"

# --- systemd unit --------------------------------------------------------------------

install_atomic "$unit_tmp" "$D$UNIT" 0644
say "wrote $D$UNIT"

# --- start ---------------------------------------------------------------------------

# Stops with exit 1 and what to do when the service did not come up.
service_failed() {
  local msg="$1: the agent is not running.
  Why: journalctl -u $SERVICE -n 50 --no-pager"
  if [ -e "$PREVIOUS" ]; then
    msg+="
  Roll back to the previous binary: mv $PREVIOUS $BIN && systemctl restart $SERVICE"
  fi
  die "$msg"
}

# Watches the service for 5 s after the restart: it must stay active (a bad
# config exits 2 and fails it; a crash loop shows as restarts or activating).
wait_active() {
  local i state restarts_before restarts_after
  restarts_before=$(systemctl show --property=NRestarts --value "$SERVICE" 2>/dev/null || true)
  for i in 1 2 3 4 5; do
    sleep 1
    state=$(systemctl is-active "$SERVICE" 2>/dev/null || true)
    [ "$state" = active ] || service_failed "$SERVICE is ${state:-in an unknown state} $i s after the restart"
  done
  restarts_after=$(systemctl show --property=NRestarts --value "$SERVICE" 2>/dev/null || true)
  [ "$restarts_after" = "$restarts_before" ] ||
    service_failed "$SERVICE restarted on its own within 5 s of the restart"
  say "$SERVICE is active"
}

if [ -n "$D" ]; then
  say "--root: systemctl skipped; installed under $D"
elif ! systemd_running; then
  say "systemd is not running here; on a systemd host run:"
  say "  systemctl daemon-reload && systemctl enable $SERVICE && systemctl restart $SERVICE"
else
  systemctl daemon-reload
  if [ "$no_start" = 1 ]; then
    say "--no-start: to start it now and at boot: systemctl enable --now $SERVICE"
  else
    systemctl enable --quiet "$SERVICE"
    systemctl restart "$SERVICE" || service_failed "systemctl restart $SERVICE failed"
    wait_active
    say "$SERVICE enabled and (re)started; check: systemctl status $SERVICE; journalctl -u $SERVICE"
  fi
fi
say "done"
