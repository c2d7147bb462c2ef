#!/usr/bin/env bash
# Build a test guest for vm-test-driver into a cache outside the git tree.
#
# Usage: guests/build.sh tiny|systemd|x11|nixos
#
# Prints one line on stdout: the directory holding the guest's NixOS-style start scripts
# (run-tiny-vm, run-systemd-vm; run-x11-vm and run-tty-vm for x11; run-client-vm, run-server-vm and
# run-webserver-vm for nixos). Everything else
# (progress, tool output) goes to stderr.
#
# Cache: ${VMTD_GUEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vm-test-driver/guests}/<guest>-<hash>, where <hash>
# is the first 16 hex digits of a sha256 over this script, guests/common/ and the guest's files under guests/<guest>/.
# A directory with a .complete stamp is reused as is. Builds go to a temporary directory next to it that is
# renamed into place; concurrent builds of the same guest are serialised with flock.
#
# Guests:
#   tiny     Debian's cloud kernel + an initramfs of busybox-static (busybox init, virtio modules,
#            backdoor shell on /dev/hvc0, a virtio disk as /dev/vda). Builds in seconds, reaches the backdoor in a few seconds under TCG.
#   systemd  debootstrap'ed Debian bookworm (minbase + systemd) on a read-only ext4 base image; each start
#            script run gets its own qcow2 overlay ($NIX_DISK_IMAGE or $TMPDIR/systemd.qcow2).
#   x11      the systemd guest with Debian's generic kernel (bochs DRM for the VGA display), Xorg on :0 (vt7)
#            started by x11.service with an xterm titled "first-terminal", and x11-utils (xwininfo); xterms
#            use the 10x20 font (OCR reads it) and show a user@host prompt. run-tty-vm starts the same image
#            as machine "tty" without X and with root logged in on tty1 (a 160-column framebuffer console).
#   nixos    machines of a NixOS test, client (1) and webserver or server (2) on VLAN 1, started by scripts written
#            after NixOS's qemu-vm.nix (9p shares, NIX_DISK_IMAGE, QEMU_VDE_SOCKET_<n> NICs with NixOS's MACs),
#            on the systemd guest's Debian with the generic kernel, NixOS's backdoor.service (bash on
#            /dev/hvc0), 192.168.1.<n> on VLAN 1 and every name in /etc/hosts; webserver runs busybox httpd
#            on port 80, server has python3 (also as `python`), client has curl. See write_nixos_start_script.
#
# Start-script contract (as NixOS's run-<name>-vm): reads QEMU_OPTS (split on spaces), QEMU_NET_OPTS (appended to
# the user netdev), QEMU_KERNEL_PARAMS, TMPDIR and USE_TMPDIR (a fresh temp dir unless both are set), creates
# $TMPDIR/xchg and runs in $TMPDIR; extra arguments are passed on to QEMU. The scripts set no accelerator,
# serial, monitor or display: the caller adds them (e.g. -accel tcg -display none -serial stdio ...).
# SHARED_DIR and xchg are not shared with these guests (the cloud kernel has no 9p); the nixos guest's
# scripts follow NixOS's own contract instead (write_nixos_start_script).
#
# Needs root (mknod, debootstrap, chroot) and these Debian packages: apt, dpkg, coreutils, util-linux,
# busybox-static, cpio, gzip (tiny); debootstrap, e2fsprogs (systemd, x11, nixos); network access to a Debian
# mirror. The nixos guest's scripts need bash, coreutils and QEMU with 9p (Debian's qemu-system-x86 has it).
set -euo pipefail

log() { printf 'build.sh: %s\n' "$*" >&2; }
die() { printf 'build.sh: error: %s\n' "$*" >&2; exit 1; }

need() { # need TOOL DEBIAN-PACKAGE
    command -v "$1" >/dev/null 2>&1 || die "'$1' not found; install the Debian package '$2' (apt-get install $2)"
}

# Quote a string for /bin/sh (single quotes).
shq() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }

usage() { echo "usage: $0 tiny|systemd|x11|nixos" >&2; exit 2; }

[ $# -eq 1 ] || usage
guest=$1
case "$guest" in tiny|systemd|x11|nixos) ;; *) usage ;; esac

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ -d "$here/$guest" ] || die "missing $here/$guest (the guest's files)"

for t in sha256sum:coreutils flock:util-linux apt-get:apt apt-cache:apt dpkg-deb:dpkg \
         mktemp:coreutils find:findutils sed:sed; do
    need "${t%%:*}" "${t#*:}"
done

# Hash of the build inputs: this script and the guest's files (names and contents).
# The x11 and nixos guests are the systemd guest's Debian plus their own files.
inputs=("$guest")
case "$guest" in x11|nixos) inputs+=(systemd) ;; esac
hash=$(cd "$here" && find build.sh common "${inputs[@]}" -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum \
       | sha256sum | cut -c1-16)

cache=${VMTD_GUEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vm-test-driver/guests}
final=$cache/$guest-$hash

if [ -e "$final/.complete" ]; then
    printf '%s\n' "$final"
    exit 0
fi

[ "$(id -u)" -eq 0 ] || die "building the $guest guest needs root (mknod/debootstrap/chroot); run as root"

mkdir -p "$cache"
exec 9>"$cache/.lock-$guest-$hash"
flock 9
if [ -e "$final/.complete" ]; then # someone else built it while we waited
    printf '%s\n' "$final"
    exit 0
fi

# Removes a build tree; debootstrap may leave /proc, /sys etc. mounted in the chroot when it fails.
remove_tree() {
    findmnt -rn -o TARGET 2>/dev/null | grep -F "$1/" | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done || true
    rm -rf --one-file-system "$1"
}

# Leftovers of killed builds of this guest (we hold the lock, so nobody is using them).
for stale in "$cache/.build-$guest-$hash".*; do
    [ -e "$stale" ] || continue
    log "removing the leftover $stale"
    remove_tree "$stale"
done

work=""
cleanup() {
    local rc=$?
    set +e
    [ -n "$work" ] && [ -d "$work" ] && remove_tree "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

work=$(mktemp -d "$cache/.build-$guest-$hash.XXXXXX")
out=$work/out # becomes $final
mkdir "$out"
start_time=$(date +%s)

# --- Debian's cloud kernel (tiny guest) ---------------------------------------------------------------------

# Prints the current linux-image-<ver>-cloud-amd64 package name.
cloud_kernel_package() {
    local pkg
    pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null \
          | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-cloud-amd64\)$/\1/p' | head -n1)
    if [ -z "$pkg" ]; then
        log "linux-image-cloud-amd64 unknown to apt; running apt-get update"
        apt-get update >&2
        pkg=$(apt-cache depends linux-image-cloud-amd64 \
              | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-cloud-amd64\)$/\1/p' | head -n1)
    fi
    [ -n "$pkg" ] || die "cannot find the version of linux-image-cloud-amd64 (apt-cache depends)"
    printf '%s\n' "$pkg"
}

# apt-get download PKG into the current directory, updating the package lists once if it fails.
download() {
    # (as root into a directory _apt cannot read: no sandbox user, and no warning about it)
    if ! apt-get -o APT::Sandbox::User=root download "$1" >&2; then
        log "apt-get download $1 failed; running apt-get update and retrying"
        apt-get update >&2
        apt-get -o APT::Sandbox::User=root download "$1" >&2
    fi
}

build_tiny() {
    need busybox busybox-static
    need cpio cpio
    need gzip gzip
    dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' \
        || die "the tiny guest needs a static busybox: install the Debian package 'busybox-static'"
    local bb
    bb=$(command -v busybox)

    local pkg kver
    pkg=$(cloud_kernel_package)
    kver=${pkg#linux-image-}
    log "tiny: kernel $pkg"
    mkdir "$work/deb"
    (cd "$work/deb" && download "$pkg")
    dpkg-deb -x "$work"/deb/"$pkg"_*.deb "$work/kernel"
    cp "$work/kernel/boot/vmlinuz-$kver" "$out/bzImage"
    echo "$kver" > "$out/kernel-version"

    local root=$work/initramfs moddir=$work/kernel/lib/modules/$kver
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc/init.d,proc,sys,dev,tmp,run,root,lib/modules,usr/share/udhcpc}
    cp "$bb" "$root/bin/busybox"
    local applet
    for applet in $("$bb" --list-full); do
        [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
    done
    ln -sf busybox "$root/bin/sh"
    ln -s /bin/busybox "$root/init"
    mknod -m 600 "$root/dev/console" c 5 1
    mknod -m 666 "$root/dev/null" c 1 3

    # Modules, decompressed, in load order; built-in ones are skipped. virtio_blk: a disk given to the
    # guest (a built-in machine's hda, whose interface is virtio by default) is /dev/vda.
    : > "$root/etc/modules-load"
    local m f
    for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_console \
             failover net_failover virtio_net virtio_blk; do
        if grep -Eq "/${m//_/[_-]}\.ko\$" "$moddir/modules.builtin"; then
            log "tiny: $m is built in"
            continue
        fi
        f=$(find "$moddir/kernel" -regextype posix-extended \
                 -regex ".*/${m//_/[_-]}\.ko(\.xz|\.zst|\.gz)?" | head -n1)
        [ -n "$f" ] || die "kernel module $m not found in $pkg"
        case "$f" in
            *.ko)     cp "$f" "$root/lib/modules/$m.ko" ;;
            *.ko.xz)  need xz xz-utils; xz -dc "$f" > "$root/lib/modules/$m.ko" ;;
            *.ko.zst) need zstd zstd; zstd -qdc "$f" > "$root/lib/modules/$m.ko" ;;
            *.ko.gz)  gzip -dc "$f" > "$root/lib/modules/$m.ko" ;;
        esac
        echo "$m" >> "$root/etc/modules-load"
    done

    install -m 644 "$here/tiny/inittab" "$root/etc/inittab"
    install -m 755 "$here/tiny/rcS" "$root/etc/init.d/rcS"
    install -m 755 "$here/common/backdoor" "$root/bin/backdoor"
    install -m 755 "$here/common/vlan-ip" "$root/sbin/vlan-ip"
    install -m 755 "$here/tiny/udhcpc.script" "$root/etc/udhcpc.script"
    echo tiny > "$root/etc/hostname"
    printf '127.0.0.1 localhost\n::1 localhost\n' > "$root/etc/hosts"
    printf 'root:x:0:0:root:/root:/bin/sh\n' > "$root/etc/passwd"
    printf 'root:x:0:\n' > "$root/etc/group"
    printf 'export PS1="\\h:\\w# "\n' > "$root/root/.profile"
    : > "$root/etc/resolv.conf"

    log "tiny: packing the initramfs"
    (cd "$root" && find . -print0 | LC_ALL=C sort -z \
        | cpio --null --create --format=newc --owner=0:0 --reproducible --quiet) | gzip -9n > "$out/initrd"

    # no_timer_check: under TCG on a loaded host (16 guests on 2 cores) the kernel's IO-APIC timer
    # check can fail and panic ("IO-APIC + timer doesn't work!"); the check is pointless in QEMU.
    write_start_script tiny 256 "console=ttyS0 loglevel=4 panic=-1 no_timer_check" \
        "-kernel $(shq "$final/bzImage") -initrd $(shq "$final/initrd")" ""
}

# --- systemd guest ------------------------------------------------------------------------------------------

# Writes an empty qcow2 (version 3, 64 KiB clusters) of SIZE bytes backed by the raw image BACKING.
# Written by hand so that neither the build nor the start script needs qemu-img (Debian's qemu-utils).
# Layout: cluster 0 header, 1 refcount table, 2 refcount block, 3 L1 table (all L1 entries zero).
write_qcow2_overlay() { # FILE SIZE BACKING
    local file=$1 size=$2 backing=$3
    local cluster=65536 l1_size
    l1_size=$(( (size + 512 * 1024 * 1024 - 1) / (512 * 1024 * 1024) )) # an L2 table maps 512 MiB
    [ ${#backing} -lt 1000 ] || die "backing file path too long for qcow2: $backing"
    [ $((l1_size * 8)) -le $cluster ] || die "image too large for this qcow2 writer"
    be() { # BYTES VALUE: big-endian escape string
        local n=$1 v=$2 s="" i
        for ((i = n - 1; i >= 0; i--)); do s+=$(printf '\\x%02x' $(( (v >> (8 * i)) & 255 ))); done
        printf '%s' "$s"
    }
    local hdr=""
    hdr+='QFI\xfb'                 # magic
    hdr+=$(be 4 3)                 # version
    hdr+=$(be 8 128)               # backing_file_offset (after header and extensions)
    hdr+=$(be 4 ${#backing})       # backing_file_size
    hdr+=$(be 4 16)                # cluster_bits
    hdr+=$(be 8 "$size")           # size
    hdr+=$(be 4 0)                 # crypt_method
    hdr+=$(be 4 "$l1_size")        # l1_size
    hdr+=$(be 8 $((3 * cluster)))  # l1_table_offset
    hdr+=$(be 8 $((1 * cluster)))  # refcount_table_offset
    hdr+=$(be 4 1)                 # refcount_table_clusters
    hdr+=$(be 4 0)                 # nb_snapshots
    hdr+=$(be 8 0)                 # snapshots_offset
    hdr+=$(be 8 0)                 # incompatible_features
    hdr+=$(be 8 0)                 # compatible_features
    hdr+=$(be 8 0)                 # autoclear_features
    hdr+=$(be 4 4)                 # refcount_order (16-bit refcounts)
    hdr+=$(be 4 104)               # header_length
    hdr+=$(be 4 $((0xE2792ACA)))   # extension: backing file format
    hdr+=$(be 4 3)
    hdr+='raw\x00\x00\x00\x00\x00' # "raw" padded to 8 bytes
    hdr+=$(be 4 0)                 # end of extensions
    hdr+=$(be 4 0)
    # offset 128: the backing file name
    {
        printf '%b' "$hdr"
        printf '%s' "$backing"
    } > "$file"
    truncate -s $((4 * cluster)) "$file"
    # refcount table entry 0 -> refcount block at cluster 2
    printf '%b' "$(be 8 $((2 * cluster)))" | dd of="$file" bs=1 seek=$((1 * cluster)) conv=notrunc status=none
    # refcount block: clusters 0..3 are in use once each
    printf '%b' "$(be 2 1)$(be 2 1)$(be 2 1)$(be 2 1)" \
        | dd of="$file" bs=1 seek=$((2 * cluster)) conv=notrunc status=none
    [ "$(stat -c %s "$file")" -eq $((4 * cluster)) ] || die "qcow2 writer produced a wrong size"
}

build_systemd() {
    build_debian systemd 512 linux-image-cloud-amd64 ""
}

build_x11() {
    build_debian x11 768 linux-image-amd64 \
        xserver-xorg-core,xserver-xorg-video-fbdev,xserver-xorg-input-libinput,xinit,xterm,x11-utils,xfonts-base
    # The tty machine (NixOS's services.getty.autologinUser = "root"): the same image without X, so that tty1
    # stays the active terminal the keyboard types into, with root logged in there (vmtd-getty). Its console
    # is the bochs framebuffer's, 160 columns: the VGA text mode's 80 would fold a longer typed line.
    write_start_script tty 512 "$DEBIAN_PARAMS systemd.mask=x11.service vmtd.autologin=root systemd.hostname=tty" \
        "-kernel $(shq "$final/bzImage") -initrd $(shq "$final/initrd")" \
        "$(shq "$final/overlay-template.qcow2")"
}

# The kernel command line of the systemd guest and its variants. no_timer_check: see the tiny guest.
DEBIAN_PARAMS="root=/dev/vda rw console=ttyS0 loglevel=4 panic=-1 net.ifnames=0 no_timer_check"

# build_debian NAME MEM-MiB KERNEL-PACKAGE EXTRA-PACKAGES(comma-separated): the systemd guest, and its
# variants (the x11 guest adds an X server and the service that starts it).
build_debian() {
    local name=$1 mem=$2 kernel=$3 extra=$4
    # dbus and libpam-systemd: what logind, user-runtime-dir and user@UID need (a user's manager).
    debian_rootfs "$name" "$kernel,dbus,libpam-systemd,netcat-openbsd${extra:+,$extra}"

    local root=$work/root sd=$work/root/etc/systemd/system
    install -m 755 "$here/common/backdoor" "$root/usr/local/sbin/backdoor"
    install -m 755 "$here/common/vlan-ip" "$root/usr/local/sbin/vlan-ip"
    install -m 644 "$here/systemd/70-vmtd-vlan.rules" "$root/etc/udev/rules.d/70-vmtd-vlan.rules"
    install -m 644 "$here/systemd/backdoor.service" "$sd/backdoor.service"
    ln -sf ../backdoor.service "$sd/multi-user.target.wants/backdoor.service"

    # Network: systemd-networkd, DHCP on Ethernet; nothing waits for it.
    install -m 644 "$here/systemd/50-ether.network" "$root/etc/systemd/network/50-ether.network"
    if [ "$name" = x11 ]; then
        install -m 644 "$here/x11/x11.service" "$sd/x11.service"
        ln -sf ../x11.service "$sd/multi-user.target.wants/x11.service"
        install -m 644 "$here/x11/Xdefaults" "$root/root/.Xdefaults"
        cat "$here/x11/bashrc" >> "$root/root/.bashrc"
        install -m 755 "$here/x11/vmtd-getty" "$root/usr/local/sbin/vmtd-getty"
        install -m 644 -D "$here/x11/getty-tty1.conf" "$sd/getty@tty1.service.d/50-vmtd-getty.conf"
    fi

    local modules=$here/$name/initramfs-modules
    [ -f "$modules" ] || modules=$here/systemd/initramfs-modules
    debian_image "$name" "$modules"

    write_start_script "$name" "$mem" "$DEBIAN_PARAMS" \
        "-kernel $(shq "$final/bzImage") -initrd $(shq "$final/initrd")" \
        "$(shq "$final/overlay-template.qcow2")"
}

# debian_rootfs NAME PACKAGES(comma-separated, the kernel among them): debootstraps Debian bookworm (minbase,
# systemd, udev, networkd, ping, busybox) into $work/root with what every Debian-based guest shares: hostname,
# /etc/hosts, fstab, an empty root password, a fresh machine id per boot, a volatile journal, networkd
# enabled, and the units that fight the backdoor for the consoles or slow a TCG boot masked.
debian_rootfs() {
    local name=$1 packages=$2
    need debootstrap debootstrap
    need mkfs.ext4 e2fsprogs
    need chroot coreutils
    need truncate coreutils
    need dd coreutils

    local root=$work/root
    local mirror=${VMTD_DEBIAN_MIRROR:-http://deb.debian.org/debian}
    log "$name: debootstrap bookworm from $mirror (takes a minute or two)"
    debootstrap --variant=minbase \
        --include="systemd,systemd-sysv,udev,iproute2,procps,busybox-static,iputils-ping,$packages" \
        bookworm "$root" "$mirror" >&2

    log "$name: configuring"
    echo "$name" > "$root/etc/hostname"
    printf '127.0.0.1 localhost\n127.0.1.1 %s\n::1 localhost ip6-localhost ip6-loopback\n' "$name" > "$root/etc/hosts"
    printf '/dev/vda / ext4 rw,errors=remount-ro 0 0\n' > "$root/etc/fstab"
    # Empty root password: the VGA console (getty@tty1) logs in without a password.
    sed -i 's/^root:[^:]*:/root::/' "$root/etc/shadow"
    # Every boot generates a fresh machine id (an empty file is not "first boot").
    : > "$root/etc/machine-id"
    rm -f "$root/var/lib/dbus/machine-id"

    local sd=$root/etc/systemd/system
    mkdir -p "$sd/multi-user.target.wants"
    mkdir -p "$root/etc/systemd/journald.conf.d"
    install -m 644 "$here/systemd/journald.conf" "$root/etc/systemd/journald.conf.d/50-vmtd.conf"

    # systemd-networkd; nothing waits for it. The guest adds its .network files.
    mkdir -p "$root/etc/systemd/network" "$sd/sockets.target.wants" "$sd/network-online.target.wants"
    ln -sf /lib/systemd/system/systemd-networkd.service "$sd/multi-user.target.wants/systemd-networkd.service"
    ln -sf /lib/systemd/system/systemd-networkd.socket "$sd/sockets.target.wants/systemd-networkd.socket"

    # Mask what fights the backdoor for the consoles or slows a TCG boot (one CPU: everything that runs at
    # boot delays everything else). getty-static would start gettys on tty2-6; getty@tty1 stays.
    local u
    for u in serial-getty@ttyS0.service serial-getty@hvc0.service getty-static.service \
             systemd-udev-settle.service systemd-networkd-wait-online.service \
             apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer e2scrub_reap.service \
             fstrim.timer systemd-timesyncd.service systemd-tmpfiles-clean.timer dpkg-db-backup.timer \
             systemd-fsck-root.service systemd-fsckd.service systemd-fsckd.socket \
             systemd-update-utmp.service systemd-update-utmp-runlevel.service systemd-hwdb-update.service \
             systemd-journal-catalog-update.service ldconfig.service systemd-firstboot.service \
             systemd-random-seed.service systemd-pstore.service systemd-repart.service \
             modprobe@dm_mod.service modprobe@efi_pstore.service modprobe@loop.service \
             dev-hugepages.mount sys-kernel-debug.mount sys-kernel-tracing.mount; do
        ln -sf /dev/null "$sd/$u"
    done
}

# debian_image NAME INITRAMFS-MODULES-FILE [COMPRESS]: the initrd (only the listed modules; gzip unless
# COMPRESS names another compressor), the kernel and initrd copied out, package caches and docs dropped,
# and $work/root packed into the read-only ext4 base.img with an empty qcow2 overlay template on it.
debian_image() {
    local name=$1 modules=$2 compress=${3:-gzip} root=$work/root
    # A small initrd: only the root disk's and the backdoor console's modules (MODULES=most loads ~190
    # modules under TCG; and virtio_console there means /dev/hvc0 exists when systemd starts).
    install -m 644 "$modules" "$root/etc/initramfs-tools/modules"
    printf 'MODULES=list\nCOMPRESS=%s\n' "$compress" > "$root/etc/initramfs-tools/conf.d/vmtd.conf"
    chroot "$root" update-initramfs -u -k all >&2

    # Smaller image: no package caches, docs or manuals.
    rm -rf "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
           "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log

    local kver
    kver=$(cd "$root/boot" && ls vmlinuz-* | sed 's/^vmlinuz-//' | sort -V | tail -n1)
    [ -n "$kver" ] && [ -f "$root/boot/initrd.img-$kver" ] || die "no kernel/initrd in $root/boot"
    cp "$root/boot/vmlinuz-$kver" "$out/bzImage"
    cp "$root/boot/initrd.img-$kver" "$out/initrd"
    echo "$kver" > "$out/kernel-version"

    # Base image (sparse): 1 GiB, or twice the tree's size if that is more, rounded to 64 MiB.
    local used size
    used=$(du -s --block-size=1M "$root" | cut -f1)
    size=$(( used * 2 > 1024 ? used * 2 : 1024 ))
    size=$(( (size + 63) / 64 * 64 ))
    log "$name: making a ${size} MiB ext4 base image from ${used} MiB"
    mkfs.ext4 -q -F -L root -d "$root" "$out/base.img" "${size}M" >&2
    chmod 444 "$out/base.img"
    write_qcow2_overlay "$out/overlay-template.qcow2" $((size * 1024 * 1024)) "$final/base.img"
    chmod 444 "$out/overlay-template.qcow2"
}

# --- nixos guest --------------------------------------------------------------------------------------------

# The machines of the nixos guest, as "NAME NUMBER VLAN…": a NixOS test numbers its nodes 1, 2, … in the
# order of their names (client before webserver), and each machine is on the VLANs listed.
# server and webserver are alternatives for machine 2 (networking tests of nixpkgs' own driver name theirs
# client and server); only one of them runs in a test.
NIXOS_MACHINES=("client 1 1" "server 2 1" "webserver 2 1")

# The nixos guest: machines started by scripts written after NixOS's run-<name>-vm (write_nixos_start_script),
# on the systemd guest's Debian with Debian's generic kernel (it has 9p; the cloud kernel has not), with
# NixOS's backdoor.service, its 9p shares, its VLAN addresses and /etc/hosts.
build_nixos() {
    # curl: the client's HTTP client; the webserver's httpd is busybox-static's (in every Debian guest);
    # python3 and python-is-python3 (`python`): the server's, as NixOS's pkgs.python3 gives both commands.
    # lz4: the initrd's compressor (it unpacks faster than gzip under TCG).
    debian_rootfs nixos linux-image-amd64,dbus,netcat-openbsd,curl,lz4,python3,python-is-python3
    local root=$work/root sd=$work/root/etc/systemd/system

    # The backdoor, as test-instrumentation.nix runs it.
    install -m 755 "$here/nixos/nixos-backdoor" "$root/usr/local/sbin/nixos-backdoor"
    install -m 644 "$here/nixos/backdoor.service" "$sd/backdoor.service"
    ln -sf ../backdoor.service "$sd/multi-user.target.wants/backdoor.service"
    # The rest of a NixOS test machine's instrumentation: journal on the serial console, manager timeouts,
    # sysctls, no gettys on the consoles (masked by debian_rootfs), /tmp kept.
    install -m 644 "$here/nixos/journald.conf" "$root/etc/systemd/journald.conf.d/50-vmtd.conf"
    mkdir -p "$root/etc/systemd/system.conf.d"
    install -m 644 "$here/nixos/system.conf" "$root/etc/systemd/system.conf.d/50-nixos-test.conf"
    install -m 644 "$here/nixos/sysctl.conf" "$root/etc/sysctl.d/50-nixos-test.conf"
    install -m 644 "$here/nixos/tmp.conf" "$root/etc/tmpfiles.d/tmp.conf"
    # Faster boots under TCG (one CPU shared by everything that starts): modules and mounts nothing here uses.
    local u
    for u in modprobe@drm.service modprobe@fuse.service modprobe@configfs.service dev-mqueue.mount; do
        ln -sf /dev/null "$sd/$u"
    done

    # The shared directories, as qemu-vm.nix's virtualisation.sharedDirectories mounts them (9p, virtio
    # transport, 9P2000.L, msize 16384), under the mount tags its start script gives them.
    local tag
    for tag in shared xchg; do
        printf '%s /tmp/%s 9p trans=virtio,version=9p2000.L,msize=16384,x-systemd.requires=modprobe@9pnet_virtio.service 0 0\n' \
            "$tag" "$tag" >> "$root/etc/fstab"
        mkdir -p "$root/tmp/$tag"
    done

    # Network, as nixos/lib/testing/network.nix configures a test machine: the NIC on VLAN v of machine m
    # (found by its MAC, 52:54:00:12:<v>:<m> in hex) has 192.168.v.m/24 and 2001:db8:v::m/64, and
    # /etc/hosts names every machine by its address on its first VLAN. Every machine's files are in the one
    # image; only those matching a NIC's MAC apply (one per address: machines with the same number share it).
    install -m 644 "$here/nixos/user-net.network" "$root/etc/systemd/network/40-user-net.network"
    local machine name number vlans v
    printf '127.0.0.1 localhost\n::1 localhost\n' > "$root/etc/hosts"
    for machine in "${NIXOS_MACHINES[@]}"; do
        read -r name number vlans <<< "$machine"
        for v in $vlans; do
            {
                printf '[Match]\nMACAddress=%s\n\n' "$(nixos_mac "$v" "$number")"
                printf '[Network]\nAddress=192.168.%d.%d/24\nAddress=2001:db8:%d::%d/64\n' "$v" "$number" "$v" "$number"
                printf 'LinkLocalAddressing=no\nIPv6AcceptRA=no\nIPv6DuplicateAddressDetection=0\n'
            } > "$root/etc/systemd/network/50-vlan$v-machine$number.network"
        done
        v=${vlans%% *}
        printf '192.168.%d.%d %s\n2001:db8:%d::%d %s\n' "$v" "$number" "$name" "$v" "$number" "$name" \
            >> "$root/etc/hosts"
    done
    : > "$root/etc/hostname" # each machine's name comes from its kernel command line (systemd.hostname=)

    # The webserver's page and server (ConditionHost=webserver).
    install -m 644 -D "$here/nixos/index.html" "$root/var/www/index.html"
    install -m 644 "$here/nixos/httpd.service" "$sd/httpd.service"
    ln -sf ../httpd.service "$sd/multi-user.target.wants/httpd.service"

    prune_kernel_modules
    debian_image nixos "$here/nixos/initramfs-modules" lz4
    for machine in "${NIXOS_MACHINES[@]}"; do
        read -r name number vlans <<< "$machine"
        # shellcheck disable=SC2086 # the VLANs are words
        write_nixos_start_script "$name" "$number" $vlans
    done
}

# nixos_mac VLAN MACHINE: NixOS's MAC of machine MACHINE's NIC on VLAN VLAN (two hex digits each).
nixos_mac() {
    printf '52:54:00:12:%02x:%02x' "$1" "$2"
}

# Drops the generic kernel's modules for hardware a QEMU guest never has or a test never uses (sound, GPUs,
# wireless, other NICs, other file systems, and the floppy, parallel port, IDE, PS/2 mouse, PC speaker and
# KVM modules udev would load and probe at every boot, and the CPU-specific crypto and cpufreq ones it
# loads because -cpu max offers every CPU feature). What stays: virtio, block, input, HID, USB, PCI,
# ACPI, the network stack, ext4, 9p, overlay, fuse and the like.
prune_kernel_modules() {
    local root=$work/root dir kver before
    for dir in "$root"/lib/modules/*/kernel; do
        kver=$(basename "$(dirname "$dir")")
        before=$(du -s --block-size=1M "$dir" | cut -f1)
        rm -rf "$dir/sound" "$dir/drivers/gpu" "$dir/drivers/media" "$dir/drivers/staging" \
               "$dir/drivers/infiniband" "$dir/drivers/isdn" "$dir/drivers/iio" "$dir/drivers/bluetooth" \
               "$dir/drivers/scsi" "$dir/drivers/md" "$dir/drivers/mmc" "$dir/drivers/mtd" \
               "$dir/drivers/target" "$dir/drivers/thunderbolt" "$dir/drivers/video" \
               "$dir/drivers/hwmon" "$dir/drivers/i2c" "$dir/drivers/spi" "$dir/drivers/power" \
               "$dir/drivers/leds" "$dir/drivers/nfc" "$dir/drivers/atm" "$dir/drivers/w1" \
               "$dir/drivers/usb/serial" "$dir/drivers/usb/gadget" "$dir/drivers/usb/misc" \
               "$dir/drivers/net/wireless" "$dir/drivers/net/ethernet" "$dir/drivers/net/usb" \
               "$dir/drivers/net/can" "$dir/drivers/net/wwan" "$dir/drivers/net/ieee802154" \
               "$dir/drivers/net/hamradio" "$dir/drivers/net/wan" "$dir/drivers/net/arcnet" \
               "$dir/drivers/net/fddi" "$dir/drivers/net/plip" "$dir/drivers/net/slip" \
               "$dir/net/wireless" "$dir/net/mac80211" "$dir/net/bluetooth" "$dir/net/can" \
               "$dir/net/ieee802154" "$dir/net/nfc" "$dir/net/atm" "$dir/net/ceph" \
               "$dir/fs/btrfs" "$dir/fs/xfs" "$dir/fs/ocfs2" "$dir/fs/gfs2" "$dir/fs/ceph" \
               "$dir/fs/smb" "$dir/fs/cifs" "$dir/fs/nfs" "$dir/fs/nfsd" "$dir/fs/ntfs3" "$dir/fs/ubifs" \
               "$dir/fs/jfs" "$dir/fs/reiserfs" "$dir/fs/f2fs" "$dir/fs/nilfs2" "$dir/fs/afs" \
               "$dir/fs/coda" "$dir/fs/dlm" "$dir/fs/orangefs" "$dir/fs/bcachefs" "$dir/fs/erofs" \
               "$dir/drivers/ata" "$dir/drivers/parport" "$dir/drivers/firewire" "$dir/drivers/platform" \
               "$dir/drivers/powercap" "$dir/drivers/input/mouse" "$dir/drivers/input/joystick" \
               "$dir/drivers/input/touchscreen" "$dir/drivers/input/tablet" "$dir/arch/x86/kvm" \
               "$dir/drivers/block/floppy.ko" "$dir/drivers/char/ppdev.ko" "$dir/drivers/char/lp.ko" \
               "$dir/drivers/input/misc/pcspkr.ko" "$dir/drivers/input/serio/serio_raw.ko" \
               "$dir/drivers/input/joydev.ko" "$dir/arch/x86/crypto" "$dir/drivers/cpufreq"
        chroot "$root" depmod -a "$kver" >&2
        log "nixos: kernel modules of $kver pruned from ${before} MiB to $(du -s --block-size=1M "$dir" | cut -f1) MiB"
    done
}

# write_nixos_start_script NAME NUMBER VLAN…: run-NAME-vm, written after the startVM script of nixpkgs'
# nixos/modules/virtualisation/qemu-vm.nix as a NixOS test machine gets it (direct kernel boot, the root
# disk a qcow2 image, the shared directories, NixOS's QEMU options and, from nixos/lib/testing/network.nix,
# a NIC per VLAN). The script's own comments say what it reads.
write_nixos_start_script() {
    local name=$1 number=$2
    shift 2
    local s=$out/run-$name-vm v nic=0
    # NixOS's kernel parameters where they matter here (panic=1; consoles ttyS0 and tty0, tty0 primary;
    # classic interface names), the root disk, the machine's host name, a quiet kernel (loglevel=4, NixOS
    # has 7) and no_timer_check (see the tiny guest).
    local params="root=/dev/vda rw panic=1 loglevel=4 net.ifnames=0 no_timer_check systemd.hostname=$name"
    params+=" console=ttyS0,115200n8 console=tty0"
    {
        cat <<EOF
#!/bin/bash
# run-$name-vm: machine "$name" (number $number of a NixOS test) of the vm-test-driver "nixos" test guest,
# generated by guests/build.sh after the start script that nixpkgs' qemu-vm.nix generates for a NixOS test
# machine (its startVM), so that the driver meets a machine built the way NixOS builds them.
#
# Environment, as in NixOS:
#   NIX_DISK_IMAGE      the root disk (qcow2), default ./$name.qcow2 in the directory the script is started
#                       in; made (a copy-on-write overlay on this guest's read-only base image) when missing
#   TMPDIR, USE_TMPDIR  with both set, QEMU runs in \$TMPDIR; otherwise in a fresh temporary directory
#   SHARED_DIR          shared with the guest at /tmp/shared (9p tag "shared"; default \$TMPDIR/xchg);
#                       \$TMPDIR/xchg is always shared at /tmp/xchg (tag "xchg")
#   QEMU_VDE_SOCKET_<n> the vde_switch of VLAN n, for each VLAN this machine is on ($*): a virtio NIC with
#                       NixOS's MAC 52:54:00:12:<n>:<machine> (hex) on netdev vlan<i>. NixOS always adds it;
#                       here a VLAN whose variable is unset or empty gets no NIC (and a note on stderr), so
#                       that one machine can run without a switch.
#   QEMU_NET_OPTS       appended to the user-mode network's options (e.g. hostfwd=tcp::2222-:22)
#   QEMU_KERNEL_PARAMS  appended to the kernel command line
#   QEMU_OPTS           more QEMU options, split on spaces; then the script's own arguments, as given
# QEMU starts as NixOS starts it, with -machine accel=kvm:tcg -cpu max (a later -machine accel=… wins) and
# no display, serial, monitor or backdoor console options of its own: the driver adds those.
set -e

# The root disk, made absolute before the cd below.
NIX_DISK_IMAGE=\$(readlink -f "\${NIX_DISK_IMAGE:-./$name.qcow2}") || test -z "\$NIX_DISK_IMAGE"
if test -n "\$NIX_DISK_IMAGE" && ! test -e "\$NIX_DISK_IMAGE"; then
    echo "run-$name-vm: making the disk image \$NIX_DISK_IMAGE (on the read-only base image)"
    cp $(shq "$final/overlay-template.qcow2") "\$NIX_DISK_IMAGE"
    chmod u+w "\$NIX_DISK_IMAGE"
fi

# The directory the VM runs in, and the one it exchanges files through.
if [ -z "\$TMPDIR" ] || [ -z "\$USE_TMPDIR" ]; then
    TMPDIR=\$(mktemp -d nix-vm.XXXXXXXXXX --tmpdir)
fi
mkdir -p "\$TMPDIR/xchg"
cd "\$TMPDIR"

# One NIC per VLAN of this machine, numbered as NixOS numbers a machine's interfaces.
vlan_nics=()
EOF
        for v in "$@"; do
            nic=$((nic + 1))
            cat <<EOF
if [ -n "\${QEMU_VDE_SOCKET_$v:-}" ]; then
    vlan_nics+=(-device "virtio-net-pci,netdev=vlan$nic,mac=$(nixos_mac "$v" "$number")"
                -netdev "vde,id=vlan$nic,sock=\$QEMU_VDE_SOCKET_$v")
else
    echo "run-$name-vm: QEMU_VDE_SOCKET_$v is not set: no NIC on VLAN $v" >&2
fi
EOF
        done
        cat <<EOF

# shellcheck disable=SC2086 # QEMU_OPTS is split on spaces, as NixOS does
exec qemu-system-x86_64 -machine accel=kvm:tcg -cpu max \\
    -name $name \\
    -m 1024 \\
    -smp 1 \\
    -device virtio-rng-pci \\
    -net nic,netdev=user.0,model=virtio -netdev user,id=user.0,"\$QEMU_NET_OPTS" \\
    -virtfs local,path="\${SHARED_DIR:-\$TMPDIR/xchg}",security_model=none,mount_tag=shared \\
    -virtfs local,path="\$TMPDIR"/xchg,security_model=none,mount_tag=xchg \\
    -drive cache=writeback,file="\$NIX_DISK_IMAGE",id=drive1,if=none,index=1,werror=report \\
    -device virtio-blk-pci,bootindex=1,drive=drive1,serial=root \\
    -device virtio-keyboard \\
    -usb \\
    -device usb-tablet,bus=usb-bus.0 \\
    -kernel $(shq "$final/bzImage") \\
    -initrd $(shq "$final/initrd") \\
    -append "$params \$QEMU_KERNEL_PARAMS" \\
    "\${vlan_nics[@]}" \\
    \$QEMU_OPTS \\
    "\$@"
EOF
    } > "$s"
    chmod 755 "$s"
}

# --- start script -------------------------------------------------------------------------------------------

# write_start_script NAME MEM-MiB KERNEL-PARAMS KERNEL-ARGS OVERLAY-TEMPLATE(quoted, or empty: no disk)
write_start_script() {
    local name=$1 mem=$2 params=$3 kargs=$4 template=$5
    local s=$out/run-$name-vm
    {
        cat <<EOF
#!/bin/sh
# Start script of the vm-test-driver "$name" test guest, generated by guests/build.sh (NixOS run-<name>-vm
# contract): QEMU_OPTS, QEMU_NET_OPTS, QEMU_KERNEL_PARAMS, TMPDIR, USE_TMPDIR$([ -n "$template" ] && echo ", NIX_DISK_IMAGE").
# Extra arguments go to QEMU; accelerator, serial, monitor and display are the caller's to add.
set -e
if [ -z "\$TMPDIR" ] || [ -z "\$USE_TMPDIR" ]; then
    TMPDIR=\$(mktemp -d nix-vm.XXXXXXXXXX --tmpdir)
fi
export TMPDIR
mkdir -p "\$TMPDIR/xchg"
cd "\$TMPDIR"
EOF
        if [ -n "$template" ]; then
            cat <<EOF
# A private copy-on-write overlay on the shared read-only base image.
disk=\${NIX_DISK_IMAGE:-\$TMPDIR/$name.qcow2}
if [ ! -e "\$disk" ]; then
    cp $template "\$disk"
    chmod u+w "\$disk"
fi
EOF
        fi
        cat <<EOF
set -f # QEMU_OPTS is split on spaces, but not globbed
exec qemu-system-x86_64 -name $name -m $mem -smp 1 -nodefaults -vga std \\
    $kargs \\
    -append "$params \$QEMU_KERNEL_PARAMS" \\
EOF
        if [ -n "$template" ]; then
            printf '    -drive "file=$disk,if=virtio,format=qcow2" \\\n'
        fi
        cat <<EOF
    -device virtio-rng-pci \\
    -netdev "user,id=user.0\${QEMU_NET_OPTS:+,\$QEMU_NET_OPTS}" -device virtio-net-pci,netdev=user.0 \\
    \$QEMU_OPTS "\$@"
EOF
    } > "$s"
    chmod 755 "$s"
}

"build_$guest"

cat > "$out/README" <<EOF
vm-test-driver test guest "$guest", built by guests/build.sh (inputs hash $hash) on $(date -u +%Y-%m-%dT%H:%M:%SZ).
Start script: run-$guest-vm. Kernel: $(cat "$out/kernel-version").
EOF
touch "$out/.complete"
if [ -e "$final" ]; then # an incomplete leftover of an interrupted build (we hold the lock)
    log "removing incomplete $final"
    remove_tree "$final"
fi
mv -T "$out" "$final"
log "$guest guest built in $(( $(date +%s) - start_time )) s: $final ($(du -sh "$final" | cut -f1))"
printf '%s\n' "$final"
