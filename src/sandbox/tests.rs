use super::*;

#[test]
fn every_role_compiles() {
    for role in Role::ALL {
        let prog = filters::program(role, seccompiler::SeccompAction::KillProcess)
            .unwrap_or_else(|e| panic!("{}: {e}", role.name()));
        assert!(!prog.is_empty());
        assert!(role.allowed_syscalls() > 20, "{}", role.name());
        eprintln!("{}: {} syscalls", role.name(), role.allowed_syscalls());
    }
    for role in Role::ALL {
        assert!(!filters::prefilter(role).unwrap().is_empty());
    }
}

/// Fork; in the child install `role`'s filter and run `f`; the child's wait status.
fn in_filtered_child(role: Role, f: fn() -> i32) -> libc::c_int {
    // Built before fork: the child only makes syscalls.
    let prog = filters::program(role, seccompiler::SeccompAction::KillProcess).unwrap();
    let first = filters::prefilter(role).unwrap();
    // SAFETY: the child calls only async-signal-safe functions (prctl, seccomp, the
    // syscalls of `f`, _exit) on memory that fork copied; the parent waits for it.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            if seccompiler::apply_filter(&first).is_err()
                || seccompiler::apply_filter(&prog).is_err()
            {
                libc::_exit(100);
            }
            libc::_exit(f());
        }
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        status
    }
}

#[test]
fn a_forbidden_syscall_kills_with_sigsys() {
    for role in Role::ALL {
        let st = in_filtered_child(role, || {
            // SAFETY: setns(2) on an invalid fd; no memory passed.
            unsafe { libc::syscall(libc::SYS_setns, -1, 0) };
            0
        });
        assert!(libc::WIFSIGNALED(st), "{}: status {st:#x}", role.name());
        assert_eq!(libc::WTERMSIG(st), libc::SIGSYS, "{}", role.name());
    }
}

#[test]
fn allowed_syscalls_pass_and_arguments_are_checked() {
    // An allowed call works.
    let st = in_filtered_child(Role::Poll, || {
        let mut b = [0u8; 8];
        // SAFETY: getrandom(2) into a live local buffer.
        let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
        // SAFETY: socket(2) with integer arguments; the fd is left to _exit.
        let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
        i32::from(n != 8 || s < 0)
    });
    assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0, "{st:#x}");
    // Opening a file fails (ENOSYS) without killing.
    let st = in_filtered_child(Role::Pcap, || {
        // SAFETY: open(2) of a NUL-terminated literal path.
        let fd = unsafe { libc::open(c"/proc/self/status".as_ptr(), libc::O_RDONLY) };
        let errno = std::io::Error::last_os_error().raw_os_error();
        i32::from(fd >= 0 || errno != Some(libc::ENOSYS))
    });
    assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0, "{st:#x}");
    // socket(AF_NETLINK) is not among the allowed families.
    let st = in_filtered_child(Role::Poll, || {
        // SAFETY: socket(2) with integer arguments.
        unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, 0) };
        0
    });
    assert!(
        libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGSYS,
        "{st:#x}"
    );
    // Executable memory is refused.
    let st = in_filtered_child(Role::TlsWorker, || {
        // SAFETY: an anonymous mapping; never touched.
        unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        0
    });
    assert!(
        libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGSYS,
        "{st:#x}"
    );
}
