//! Memory handed back to the kernel: the two primitives of the poll thread's idle trim
//! ([`crate::stack`], step 5 of a turn).
//!
//! # Theory of operation
//!
//! An idle network should cost what it holds, not what it once held. Three kinds of memory
//! stay resident after traffic stops unless they are given back:
//! - pages of the frame pool's free slots ([`crate::pool::Pool::trim`] names the ranges,
//!   [`discard`] drops them);
//! - buffers on spare lists (smoltcp sockets of finished flows, the egress driver's spare
//!   buffers): their owners drop them, and an mmap-backed buffer is unmapped by `free`;
//! - freed heap memory that glibc keeps in its arenas: [`trim_heap`].
//!
//! `MADV_DONTNEED`, not `MADV_FREE`: `MADV_FREE` leaves the pages mapped and counted in the
//! process's RSS (and its cgroup's charge) until the kernel is short of memory, so an idle
//! sandbox would still look — and be billed — as big as its busiest moment; `MADV_DONTNEED`
//! returns them at once, deterministically. Its cost is a zero-filled page fault on the next
//! write of each page, paid only when traffic resumes after an idle period (a slot is 17
//! pages: a few microseconds per slot reused), never on a busy link. The discarded contents
//! are not needed: a free slot's bytes are unspecified until its next owner writes them.
//!
//! With transparent huge pages set to `always`, a discarded 64 KiB range splits its huge
//! page, and khugepaged may collapse the range again later (`max_ptes_none`); with the
//! usual `madvise` setting (and on this project's machines) the pool is never huge-paged.
//!
//! ## Syscalls
//!
//! `mincore(2)` and `madvise(2)` (`MADV_DONTNEED`) in [`discard`]; on glibc, `malloc_trim(3)`
//! in [`trim_heap`], which itself uses `madvise(2)` and `brk(2)`. `sysconf(_SC_PAGESIZE)`
//! (no syscall: the auxiliary vector) in [`page_size`].

/// The size of a memory page (`sysconf(_SC_PAGESIZE)`; 4096 if that fails).
pub fn page_size() -> usize {
    // SAFETY: sysconf(3) has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// Pages whose residency one `mincore(2)` call reports.
const MINCORE_CHUNK: usize = 1024;

/// Give the pages of `[start, start + len)` back to the kernel (`MADV_DONTNEED`); they read
/// as zero afterwards. Returns how many bytes of the range were resident (`mincore(2)`)
/// before. A failed call (a locked range: `EINVAL`) leaves the pages as they were and counts
/// nothing.
///
/// # Safety
/// - `start` and `len` are multiples of [`page_size`], and the range lies inside one
///   private anonymous allocation (heap or mmap) of the caller;
/// - nothing reads or writes the range concurrently, and nothing needs its contents:
///   the caller owns every byte of it exclusively for the duration of the call.
pub unsafe fn discard(start: *mut u8, len: usize) -> usize {
    let page = page_size();
    debug_assert!((start as usize).is_multiple_of(page) && len.is_multiple_of(page));
    let mut resident = 0;
    let mut vec = [0u8; MINCORE_CHUNK];
    let mut off = 0;
    while off < len {
        let n = (len - off).min(MINCORE_CHUNK * page);
        // SAFETY: the range is page aligned and mapped (the caller's allocation); `vec`
        // holds one byte per page of it (n / page ≤ MINCORE_CHUNK).
        let r = unsafe { libc::mincore(start.add(off).cast(), n, vec.as_mut_ptr()) };
        if r == 0 {
            resident += vec[..n / page].iter().filter(|&&v| v & 1 != 0).count() * page;
        }
        off += n;
    }
    // SAFETY: the range is page aligned and lies inside the caller's private anonymous
    // allocation, which the caller owns exclusively and whose contents it does not need;
    // MADV_DONTNEED keeps the mapping (later accesses see zero-filled pages).
    let r = unsafe { libc::madvise(start.cast(), len, libc::MADV_DONTNEED) };
    if r == 0 {
        resident
    } else {
        0
    }
}

/// Return the free memory glibc keeps in its arenas (every thread's, `malloc_trim(0)`);
/// true when some was returned. A no-op (false) with another C library.
pub fn trim_heap() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim(3) only returns free memory of the allocator's own arenas; it
        // is thread-safe (it takes each arena's lock).
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discard_counts_resident_pages_and_zeroes_them() {
        let page = page_size();
        // Above glibc's mmap threshold, page aligned + 16; keep whole pages inside it.
        let mut v = vec![0u8; 64 * page];
        let base = v.as_mut_ptr();
        let start = (base as usize).next_multiple_of(page) - base as usize;
        let len = 32 * page;
        v[start..start + len].fill(0x5a);
        v[start + len] = 7; // outside the range: kept
                            // SAFETY: a whole-page range inside `v`, which this test owns.
        let resident = unsafe { discard(base.add(start), len) };
        assert_eq!(resident, len);
        // Nothing resident any more: discarding again counts nothing (before reading: a
        // read maps the shared zero page, which mincore reports as resident).
        // SAFETY: as above.
        assert_eq!(unsafe { discard(base.add(start), len) }, 0);
        assert!(v[start..start + len].iter().all(|&b| b == 0));
        assert_eq!(v[start + len], 7);
        // The pages work as before.
        v[start] = 1;
        assert_eq!(v[start], 1);
    }

    #[test]
    fn trim_heap_does_not_break_the_heap() {
        let many: Vec<Vec<u8>> = (0..1000).map(|i| vec![1u8; 1000 + i]).collect();
        drop(many);
        let _ = trim_heap();
        let again: Vec<Vec<u8>> = (0..100).map(|i| vec![2u8; 1000 + i]).collect();
        assert!(again.iter().all(|v| v.iter().all(|&b| b == 2)));
    }
}
