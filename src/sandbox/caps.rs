//! Linux capabilities and `no_new_privs` of the calling thread: what [`super`] drops.
//!
//! # Theory of operation
//!
//! Capabilities are per thread in Linux: `capset(2)` and `PR_CAPBSET_DROP` change the
//! calling thread only (threads it spawns afterwards inherit them), so every sandboxed
//! thread drops its own, and the `attach`/`qemu`/`vhost-user` main thread drops once the
//! TAP is open and the namespace entered. Order matters: the bounding set is cleared
//! first (that needs `CAP_SETPCAP`, which the second step drops), then the ambient set,
//! then effective, permitted and inheritable are set to what is kept. Without
//! `CAP_SETPCAP` (ringnet not started as root, e.g. `qemu` mode) the bounding set cannot
//! be touched: that is skipped, the other steps still happen (dropping never needs a
//! capability).
//!
//! Syscalls: `prctl` (`PR_CAPBSET_DROP`, `PR_CAP_AMBIENT`, `PR_SET_NO_NEW_PRIVS`),
//! `capset`, `capget`, and `open`/`read` of `/proc/sys/kernel/cap_last_cap`.

use std::io;

/// `CAP_NET_BIND_SERVICE`: bind ports below 1024.
pub const CAP_NET_BIND_SERVICE: u32 = 10;
/// `CAP_NET_ADMIN`: configure interfaces, addresses and routes.
pub const CAP_NET_ADMIN: u32 = 12;
/// `CAP_SYS_ADMIN`: among much else, `setns(2)` and `unshare(CLONE_NEWNET)`.
pub const CAP_SYS_ADMIN: u32 = 21;

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The highest capability number this kernel knows (`/proc/sys/kernel/cap_last_cap`; 63
/// when unreadable, which over-covers: dropping an unknown capability fails with `EINVAL`
/// and is ignored).
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63)
}

/// The calling thread's permitted set, as a bit mask.
pub fn permitted() -> io::Result<u64> {
    let mut hdr = CapHeader {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget(2) with a v3 header and room for the two data words it writes.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::from(data[0].permitted) | (u64::from(data[1].permitted) << 32))
}

/// What [`drop_all_but`] could do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dropped {
    /// The bounding set was cleared (but for what is kept).
    pub bounding: bool,
}

/// Keep only `keep` (capability numbers) in the calling thread's effective, permitted and
/// bounding sets (of those the thread has: nothing is gained), clear its inheritable and
/// ambient sets. Errors only when `capset(2)` itself fails.
pub fn drop_all_but(keep: &[u32]) -> io::Result<Dropped> {
    let keep_mask = keep.iter().fold(0u64, |m, &c| m | (1u64 << c));
    let mut bounding = true;
    for cap in 0..=last_cap() {
        if keep_mask & (1 << cap) != 0 {
            continue;
        }
        // SAFETY: prctl(2) with integer arguments only.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            // EPERM: no CAP_SETPCAP (not root); EINVAL: a number past the kernel's last.
            if e.raw_os_error() == Some(libc::EPERM) {
                bounding = false;
                break;
            }
        }
    }
    // SAFETY: prctl(2) with integer arguments only. EINVAL on kernels without ambient
    // capabilities (before 4.3), which have no ambient set to clear.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
    }
    let now = permitted()?;
    let kept = now & keep_mask;
    let mut hdr = CapHeader {
        version: VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: kept as u32,
            permitted: kept as u32,
            inheritable: 0,
        },
        CapData {
            effective: (kept >> 32) as u32,
            permitted: (kept >> 32) as u32,
            inheritable: 0,
        },
    ];
    // SAFETY: capset(2) with a v3 header and the two data words it reads.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Dropped { bounding })
}

/// Set `no_new_privs` on the calling thread (inherited by what it spawns): no `execve`
/// after it gains privileges (setuid bits, file capabilities).
pub fn no_new_privs() -> io::Result<()> {
    // SAFETY: prctl(2) with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
