# shellcheck shell=bash
# etcd for the many-machines tests (tests/test_etcd_*.py): Debian's etcd-server, installed
# with apt-get when missing. The tests start it themselves on loopback (free ports, their
# own data folder) and stop it; no service is started here. Under CI they fail, rather than
# skip, when the binary is missing.

# step_etcd_install: etcd and etcdctl on the PATH.
step_etcd_install() {
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi
    if ! command -v etcd >/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        "${sudo[@]}" apt-get install -y -q etcd-server etcd-client >/dev/null ||
            { "${sudo[@]}" apt-get update -q >/dev/null &&
                "${sudo[@]}" apt-get install -y -q etcd-server etcd-client >/dev/null; }
    fi
    # sed reads to the end: head would close the pipe early and etcd die of SIGPIPE (exit 141)
    etcd --version | sed -n 1p
}
