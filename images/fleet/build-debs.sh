#!/bin/bash
# Build the demo fleet's packages (.deb) from their definitions; used by host.Dockerfile and
# repo.Dockerfile alike, so the hosts install the very packages the repository serves.
#
#   build-debs.sh DEFINITIONS_DIR OUT_DIR
#
# A definition, DEFINITIONS_DIR/<package>_<version>.pkg, is the package's control file without the
# boilerplate (Architecture, Maintainer, Section, Priority are added here). Fields this script reads:
#   Package, Version     the file name must be <Package>_<Version>.pkg
#   Opsbook-Stacks       the stacks whose hosts get the package (space-separated: web db)
#   Opsbook-Reboot       yes: its postinst asks for a reboot the Debian way (/run/reboot-required
#                        and /run/reboot-required.pkgs); no: it does not
# Every Opsbook-* field also goes into the .deb and so into the repository's Packages index, where
# the opsbook package reads the errata (advisory, severity, issue date, reboot) from.
#
# The package installs /usr/share/opsbook-demo/<package>.version (its version, one line), so tests
# can see what is installed without dpkg.
#
# OUT_DIR receives:
#   <package>_<version>_all.deb      one per definition
#   index.tsv                        package, version, stacks (comma-separated), reboot, baseline, file
#   baseline-<stack>.list            the .deb files a host of <stack> starts with: the lowest version
#                                    of each of the stack's packages (also what `stable` starts with)
set -euo pipefail

die() { echo "build-debs: $*" >&2; exit 1; }
[ $# -eq 2 ] || die "usage: build-debs.sh DEFINITIONS_DIR OUT_DIR"
defs=$1 out=$2
[ -d "$defs" ] || die "no definitions folder '$defs'"

# Same bytes from the same definitions: fixed file times inside the packages.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1767225600}
maintainer="Opsbook demo fleet <fleet@opsbook.invalid>"

# field FILE NAME: the value of a single-line field of a control file.
field() { sed -n "s/^$2:[[:space:]]*//p" "$1" | head -n 1; }

mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
index=$work/index.tsv
: >"$index"

shopt -s nullglob
definitions=("$defs"/*.pkg)
[ ${#definitions[@]} -gt 0 ] || die "no *.pkg definitions in '$defs'"

for def in "${definitions[@]}"; do
  name=$(field "$def" Package) version=$(field "$def" Version)
  stacks=$(field "$def" Opsbook-Stacks) reboot=$(field "$def" Opsbook-Reboot)
  where="$(basename "$def")"
  [[ $name =~ ^[a-z0-9][a-z0-9.+-]+$ ]] || die "$where: Package '$name' is not a Debian package name"
  [[ $version =~ ^[0-9][A-Za-z0-9.+~-]*$ ]] || die "$where: Version '$version' is not a Debian version"
  [ "$where" = "${name}_${version}.pkg" ] || die "$where: expected the file to be named ${name}_${version}.pkg"
  [ -n "$stacks" ] || die "$where: Opsbook-Stacks is empty; expected stacks such as 'web db'"
  case $reboot in yes | no) ;; *) die "$where: Opsbook-Reboot is '$reboot'; expected yes or no" ;; esac
  grep -q '^Description: .' "$def" || die "$where: no Description"
  for boilerplate in Architecture Maintainer Section Priority; do
    grep -q "^$boilerplate:" "$def" && die "$where: $boilerplate is set by build-debs.sh, remove it"
  done

  root=$work/$name-$version
  mkdir -p "$root/DEBIAN" "$root/usr/share/opsbook-demo"
  {
    grep -v '^#' "$def"
    echo "Architecture: all"
    echo "Maintainer: $maintainer"
    echo "Section: admin"
    echo "Priority: optional"
  } >"$root/DEBIAN/control"
  echo "$version" >"$root/usr/share/opsbook-demo/$name.version"
  if [ "$reboot" = yes ]; then
    # What Debian's kernel and libc packages do (update-notifier-common's notify-reboot-required).
    cat >"$root/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    echo "*** System restart required ***" >/run/reboot-required
    if ! grep -qsx "$DPKG_MAINTSCRIPT_PACKAGE" /run/reboot-required.pkgs; then
        echo "$DPKG_MAINTSCRIPT_PACKAGE" >>/run/reboot-required.pkgs
    fi
fi
POSTINST
    chmod 0755 "$root/DEBIAN/postinst"
  fi
  find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  deb=${name}_${version}_all.deb
  dpkg-deb --root-owner-group -Zxz --build "$root" "$out/$deb" >/dev/null
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$version" "${stacks// /,}" "$reboot" "$deb" >>"$index"
done

# Two definitions of one version would silently overwrite each other's .deb.
dupes=$(cut -f1,2 "$index" | sort | uniq -d)
[ -z "$dupes" ] || die "defined twice: $dupes"

# The baseline: each package's lowest version (Debian's version order, not the text's).
declare -A lowest=()
while IFS=$'\t' read -r name version _; do
  if [ -z "${lowest[$name]:-}" ] || dpkg --compare-versions "$version" lt "${lowest[$name]}"; then
    lowest[$name]=$version
  fi
done <"$index"

: >"$out/index.tsv"
rm -f "$out"/baseline-*.list
while IFS=$'\t' read -r name version stacks reboot deb; do
  baseline=no
  if [ "${lowest[$name]}" = "$version" ]; then
    baseline=yes
    for stack in ${stacks//,/ }; do echo "$deb" >>"$out/baseline-$stack.list"; done
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$version" "$stacks" "$reboot" "$baseline" "$deb" >>"$out/index.tsv"
done < <(sort -t $'\t' -k1,1 -k2,2V "$index")

echo "build-debs: $(wc -l <"$out/index.tsv") packages in $out ($(cd "$out" && echo baseline-*.list))"
