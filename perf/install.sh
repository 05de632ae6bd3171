# shellcheck shell=bash
# perf/install.sh - sourced by the perf scripts before anything else (not run): the Debian
# packages of the tools a script needs, installed when missing.
#
# pkgs_missing CMD:PKG...   prints PKG for every CMD not on PATH, one per line
# install_pkgs WHO PKG...   apt-get installs PKG... (nothing when none is given); with
#                           PERF_NO_INSTALL set it names them and exits 1 instead. WHO names
#                           the script in its messages.

pkgs_missing() {
	local pair
	for pair in "$@"; do
		command -v "${pair%%:*}" >/dev/null 2>&1 || echo "${pair#*:}"
	done
}

install_pkgs() {
	local who=$1
	shift
	[ $# -gt 0 ] || return 0
	if [ -n "${PERF_NO_INSTALL:-}" ]; then
		echo "$who: missing packages: $*" >&2
		exit 1
	fi
	echo "$who: installing $*" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
