//! Running a signal handler: the `rt_sigframe` Linux x86-64 builds on the program's stack
//! (or its alternate signal stack), and reading it back at `rt_sigreturn`. Plain functions
//! over guest memory and register values, no KVM, so the layout is tested here.
//!
//! The frame, from the handler's rsp up (as Linux lays it out, so glibc, CPython and
//! anything that reads a `ucontext_t` find what they expect):
//!
//! ```text
//! rsp+0    pretcode: sa_restorer, where the handler's `ret` goes (it calls rt_sigreturn)
//! rsp+8    struct ucontext (304 bytes): flags, link, uc_stack, sigcontext, uc_sigmask
//! rsp+312  struct siginfo (128 bytes)
//!          ... then, 64-byte aligned above it, the XSAVE image of the FPU/SSE/AVX state,
//!          which sigcontext.fpstate points to; below the interrupted rsp's 128-byte red zone.
//! ```
//!
//! Everything read back at rt_sigreturn is the program's to scribble on, so nothing in it is
//! trusted: rip and rsp must be canonical user addresses, rflags is cut to the user flags and
//! CS/SS are always the user selectors (`call::write_user_return`), the mask cannot block
//! SIGKILL/SIGSTOP, and KVM checks the XSAVE image (a bad one ends the call).

use kvm_bindings::{kvm_regs, kvm_xsave};

use crate::layout::{PAGE_SIZE, USER_START};
use crate::memory::{GuestMemory, UserAddr};
use crate::process::SigAction;

/// SA_SIGINFO changes nothing on x86-64: every handler gets (sig, info, ucontext).
#[cfg(test)]
const SA_SIGINFO: u64 = 4;
pub const SA_ONSTACK: u64 = 0x0800_0000;
pub const SA_RESTORER: u64 = 0x0400_0000;
pub const SA_NODEFER: u64 = 0x4000_0000;
pub const SA_RESETHAND: u64 = 0x8000_0000;
const SS_ONSTACK: u32 = 1;
const SS_DISABLE: u32 = 2;

/// Bytes of the XSAVE image on the frame (KVM's `kvm_xsave`, which holds every feature XCR0
/// enables here).
pub const XSAVE_BYTES: u64 = 4096;
const UCONTEXT_SIZE: u64 = 304;
const SIGINFO_SIZE: u64 = 128;
const FRAME_SIZE: u64 = 8 + UCONTEXT_SIZE + SIGINFO_SIZE;
const UC_MCONTEXT: u64 = 40;
const UC_SIGMASK: u64 = 296;
/// uc_flags: the frame has an XSAVE image, and sigcontext.ss is meaningful.
const UC_FP_XSTATE: u64 = 1;
const UC_SIGCONTEXT_SS: u64 = 2;
/// The red zone below rsp that leaf functions use without moving rsp.
const RED_ZONE: u64 = 128;
/// Lowest non-canonical address (user space ends below it).
const NON_CANONICAL: u64 = 0x0000_8000_0000_0000;

/// RFLAGS bits a handler starts without: TF, DF, RF.
const HANDLER_CLEARS_RFLAGS: u64 = 0x100 | 0x400 | 0x1_0000;

/// Why a signal could not be delivered or returned from; the call ends (Linux would kill
/// the program with SIGSEGV).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("the handler of signal {sig} has no SA_RESTORER to return through")]
    NoRestorer { sig: i32 },
    #[error("the frame for signal {sig} at {addr:#x} does not fit in the program's stack memory")]
    Unwritable { sig: i32, addr: u64 },
    #[error("rt_sigreturn found no readable signal frame at {addr:#x}")]
    Unreadable { addr: u64 },
    #[error("rt_sigreturn's frame has a rip {rip:#x} or rsp {rsp:#x} outside user space")]
    BadRegisters { rip: u64, rsp: u64 },
    #[error("rt_sigreturn's frame has an FPU state KVM refuses (errno {errno})")]
    BadFpuState { errno: i32 },
}

/// A synchronous fault's details, for sigcontext and siginfo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub vector: u8,
    pub error_code: u64,
    pub cr2: u64,
}

/// The signal a fault with exception `vector` raises, as Linux maps them, and its si_code.
pub fn fault_signal(vector: u8, error_code: u64) -> Option<(i32, i32)> {
    const SIGILL: i32 = 4;
    const SIGTRAP: i32 = 5;
    const SIGBUS: i32 = 7;
    const SIGFPE: i32 = 8;
    const SIGSEGV: i32 = 11;
    const SI_KERNEL: i32 = 0x80;
    Some(match vector {
        0 => (SIGFPE, 1),                                         // #DE: FPE_INTDIV
        1 | 3 => (SIGTRAP, SI_KERNEL),                            // #DB, #BP
        4 | 5 => (SIGSEGV, SI_KERNEL),                            // #OF, #BR
        6 => (SIGILL, 2),                                         // #UD: ILL_ILLOPN
        7 => (SIGFPE, SI_KERNEL),                                 // #NM
        11 | 12 | 17 => (SIGBUS, 2),                              // #NP, #SS, #AC: BUS_ADRERR
        13 => (SIGSEGV, SI_KERNEL),                               // #GP
        14 => (SIGSEGV, if error_code & 1 == 0 { 1 } else { 2 }), // #PF: SEGV_MAPERR/ACCERR
        16 | 19 => (SIGFPE, 0),                                   // #MF, #XM
        _ => return None,
    })
}

/// A `struct siginfo` for `sig` sent with `code`: from the program itself for kill/tgkill,
/// with the faulting address for a fault.
pub fn siginfo(sig: i32, code: i32, fault_addr: Option<u64>) -> [u8; SIGINFO_SIZE as usize] {
    let mut b = [0u8; SIGINFO_SIZE as usize];
    b[0..4].copy_from_slice(&sig.to_le_bytes());
    b[8..12].copy_from_slice(&code.to_le_bytes());
    match fault_addr {
        Some(addr) => b[16..24].copy_from_slice(&addr.to_le_bytes()),
        None if code <= 0 => {
            // SI_USER, SI_TKILL: si_pid and si_uid of the sender, the program itself.
            b[16..20].copy_from_slice(&(crate::process::GUEST_PID as i32).to_le_bytes());
            b[20..24].copy_from_slice(&(crate::process::GUEST_UID as u32).to_le_bytes());
        }
        None => {}
    }
    b
}

/// One signal to deliver.
pub struct Delivery {
    pub sig: i32,
    pub action: SigAction,
    pub info: [u8; SIGINFO_SIZE as usize],
    /// The mask the interrupted code ran with (restored by rt_sigreturn).
    pub old_mask: u64,
    pub fault: Option<Fault>,
}

/// The program's alternate signal stack (`stack_t`: ss_sp, ss_flags, ss_size).
struct AltStack {
    sp: u64,
    flags: u32,
    size: u64,
}

impl AltStack {
    fn parse(raw: &[u8; 24]) -> AltStack {
        let word = |i: usize| u64::from_le_bytes(raw[i..i + 8].try_into().expect("8 bytes"));
        AltStack { sp: word(0), flags: u32::from_le_bytes(raw[8..12].try_into().expect("4 bytes")), size: word(16) }
    }
    fn enabled(&self) -> bool {
        self.flags & SS_DISABLE == 0 && self.size != 0
    }
    fn contains(&self, sp: u64) -> bool {
        sp > self.sp && sp - self.sp <= self.size
    }
}

/// Writes the frame for `d` below `ctx.rsp` (or on the alternate stack) and returns the
/// registers the handler starts with. `ctx` is the interrupted context (rip, rsp, rflags
/// and every general register as the program will get them back), `xsave` its FPU state,
/// `guard` the stack guard page the frame must not touch.
pub fn push_frame(
    mem: &mut GuestMemory,
    ctx: &kvm_regs,
    xsave: &kvm_xsave,
    d: &Delivery,
    altstack: &[u8; 24],
    guard: u64,
) -> Result<kvm_regs, FrameError> {
    if d.action.flags & SA_RESTORER == 0 {
        return Err(FrameError::NoRestorer { sig: d.sig });
    }
    let alt = AltStack::parse(altstack);
    let on_alt = alt.enabled() && alt.contains(ctx.rsp);
    let mut sp = ctx.rsp.wrapping_sub(RED_ZONE);
    if d.action.flags & SA_ONSTACK != 0 && alt.enabled() && !on_alt {
        sp = alt.sp.wrapping_add(alt.size);
    }
    let fpstate = sp.wrapping_sub(XSAVE_BYTES) & !63;
    let frame = (fpstate.wrapping_sub(FRAME_SIZE) & !15).wrapping_sub(8);
    let end = fpstate.wrapping_add(XSAVE_BYTES);
    let unwritable = FrameError::Unwritable { sig: d.sig, addr: frame };
    if frame < USER_START || frame > fpstate || end < fpstate || (frame < guard + PAGE_SIZE && end > guard) {
        return Err(unwritable);
    }

    let mut buf = vec![0u8; (end - frame) as usize];
    let mut put = |at: u64, v: u64| {
        let i = at as usize;
        buf[i..i + 8].copy_from_slice(&v.to_le_bytes());
    };
    put(0, d.action.restorer);
    let uc = 8;
    put(uc, UC_FP_XSTATE | UC_SIGCONTEXT_SS);
    put(uc + 16, alt.sp);
    let ss_flags = if !alt.enabled() {
        SS_DISABLE
    } else if on_alt {
        SS_ONSTACK
    } else {
        0
    };
    put(uc + 24, u64::from(ss_flags));
    put(uc + 32, alt.size);
    let sc = uc + UC_MCONTEXT;
    let gprs = [
        ctx.r8, ctx.r9, ctx.r10, ctx.r11, ctx.r12, ctx.r13, ctx.r14, ctx.r15, ctx.rdi, ctx.rsi, ctx.rbp, ctx.rbx,
        ctx.rdx, ctx.rax, ctx.rcx, ctx.rsp, ctx.rip, ctx.rflags,
    ];
    for (i, v) in gprs.iter().enumerate() {
        put(sc + 8 * i as u64, *v);
    }
    // cs, gs, fs, ss (u16 each).
    put(sc + 144, u64::from(crate::layout::USER_CS) | (u64::from(crate::layout::USER_DS) << 48));
    if let Some(f) = d.fault {
        put(sc + 152, f.error_code);
        put(sc + 160, u64::from(f.vector));
        put(sc + 176, f.cr2);
    }
    put(sc + 168, d.old_mask);
    put(sc + 184, fpstate);
    put(uc + UC_SIGMASK, d.old_mask);
    let info = (8 + UCONTEXT_SIZE) as usize;
    buf[info..info + SIGINFO_SIZE as usize].copy_from_slice(&d.info);
    let fp = (fpstate - frame) as usize;
    for (chunk, word) in buf[fp..].chunks_exact_mut(4).zip(xsave.region.iter()) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    mem.write_user(UserAddr::new(frame), &buf).map_err(|_| unwritable)?;

    Ok(kvm_regs {
        rdi: d.sig as u64,
        rsi: frame + 8 + UCONTEXT_SIZE,
        rdx: frame + uc,
        rax: 0,
        rsp: frame,
        rip: d.action.handler,
        rflags: ctx.rflags & !HANDLER_CLEARS_RFLAGS,
        ..*ctx
    })
}

/// What rt_sigreturn puts back.
pub struct Restored {
    /// Every general register, rip, rsp and rflags (still to be sanitised on entry).
    pub regs: kvm_regs,
    /// The signal mask (SIGKILL and SIGSTOP already removed).
    pub mask: u64,
    /// The FPU state to load, or None if the frame points at none.
    pub xsave: Option<Box<kvm_xsave>>,
}

/// Reads the frame rt_sigreturn returns through: the handler's `ret` popped pretcode, so
/// the ucontext is at the rsp of the rt_sigreturn syscall.
pub fn read_frame(mem: &GuestMemory, rsp: u64) -> Result<Restored, FrameError> {
    let unreadable = FrameError::Unreadable { addr: rsp.wrapping_sub(8) };
    let uc = mem.user_slice(UserAddr::new(rsp), UCONTEXT_SIZE).map_err(|_| unreadable.clone())?;
    let word = |at: u64| u64::from_le_bytes(uc[at as usize..at as usize + 8].try_into().expect("8 bytes"));
    let g = |i: u64| word(UC_MCONTEXT + 8 * i);
    let regs = kvm_regs {
        r8: g(0),
        r9: g(1),
        r10: g(2),
        r11: g(3),
        r12: g(4),
        r13: g(5),
        r14: g(6),
        r15: g(7),
        rdi: g(8),
        rsi: g(9),
        rbp: g(10),
        rbx: g(11),
        rdx: g(12),
        rax: g(13),
        rcx: g(14),
        rsp: g(15),
        rip: g(16),
        rflags: g(17),
    };
    if regs.rip >= NON_CANONICAL || regs.rsp >= NON_CANONICAL {
        return Err(FrameError::BadRegisters { rip: regs.rip, rsp: regs.rsp });
    }
    let mask = word(UC_SIGMASK) & !crate::syscalls::UNBLOCKABLE_SIGNALS;
    let fpstate = g(23);
    let xsave = if fpstate == 0 {
        None
    } else {
        let bytes = mem
            .user_slice(UserAddr::new(fpstate), XSAVE_BYTES)
            .map_err(|_| FrameError::Unreadable { addr: fpstate })?;
        let mut x = Box::<kvm_xsave>::default();
        for (word, chunk) in x.region.iter_mut().zip(bytes.chunks_exact(4)) {
            *word = u32::from_le_bytes(chunk.try_into().expect("4 bytes"));
        }
        Some(x)
    };
    Ok(Restored { regs, mask, xsave })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEM: u64 = 32 << 20;

    fn ctx() -> kvm_regs {
        kvm_regs {
            r8: 8,
            r9: 9,
            r10: 10,
            r11: 11,
            r12: 12,
            r13: 13,
            r14: 14,
            r15: 15,
            rdi: 101,
            rsi: 102,
            rbp: 103,
            rbx: 104,
            rdx: 105,
            rax: 106,
            rcx: 107,
            rsp: 0x80_0008,
            rip: 0x40_1234,
            rflags: 0x202 | 0x400 | 0x1,
        }
    }

    fn delivery(flags: u64) -> Delivery {
        Delivery {
            sig: 10,
            action: SigAction { handler: 0x40_5000, flags: flags | SA_RESTORER, restorer: 0x40_6000, mask: 0 },
            info: siginfo(10, -6, None),
            old_mask: 0x1234,
            fault: None,
        }
    }

    fn xsave() -> Box<kvm_xsave> {
        let mut x = Box::<kvm_xsave>::default();
        for (i, w) in x.region.iter_mut().enumerate() {
            *w = i as u32 * 3;
        }
        x
    }

    #[test]
    fn the_handler_gets_sig_info_and_ucontext_on_an_aligned_frame_below_the_red_zone() {
        let mut mem = GuestMemory::new(MEM).unwrap();
        let c = ctx();
        let h = push_frame(&mut mem, &c, &xsave(), &delivery(SA_SIGINFO), &[0; 24], MEM - (8 << 20)).unwrap();
        assert_eq!((h.rip, h.rdi, h.rax), (0x40_5000, 10, 0));
        assert_eq!((h.rsp + 8) % 16, 0, "rsp as just after a call");
        assert!(h.rsp + FRAME_SIZE + XSAVE_BYTES <= c.rsp - RED_ZONE + 64);
        assert_eq!(h.rflags & 0x400, 0, "DF cleared for the handler");
        assert_eq!((h.r12, h.rbx), (12, 104), "other registers as they were");
        assert_eq!(mem.read_user_u64(UserAddr::new(h.rsp)).unwrap(), 0x40_6000, "returns into the restorer");
        assert_eq!(h.rsi, h.rsp + 312);
        assert_eq!(h.rdx, h.rsp + 8);
        let info = mem.user_slice(UserAddr::new(h.rsi), 24).unwrap();
        assert_eq!(i32::from_le_bytes(info[0..4].try_into().unwrap()), 10);
        assert_eq!(i32::from_le_bytes(info[8..12].try_into().unwrap()), -6, "SI_TKILL");
        assert_eq!(i32::from_le_bytes(info[16..20].try_into().unwrap()), 100, "si_pid");
        // glibc's ucontext_t: gregs[REG_RIP] is gregs[16], at uc+40+128.
        assert_eq!(mem.read_user_u64(UserAddr::new(h.rdx + 40 + 16 * 8)).unwrap(), 0x40_1234);
        assert_eq!(mem.read_user_u64(UserAddr::new(h.rdx + 296)).unwrap(), 0x1234, "uc_sigmask");
        let fpstate = mem.read_user_u64(UserAddr::new(h.rdx + 40 + 184)).unwrap();
        assert_eq!(fpstate % 64, 0);
        assert_eq!(mem.read_user_u64(UserAddr::new(fpstate + 8)).unwrap(), ((3u64 * 3) << 32) | (2 * 3));
    }

    #[test]
    fn sigreturn_reads_back_exactly_what_the_frame_saved() {
        let mut mem = GuestMemory::new(MEM).unwrap();
        let c = ctx();
        let h = push_frame(&mut mem, &c, &xsave(), &delivery(0), &[0; 24], MEM - (8 << 20)).unwrap();
        // The handler's `ret` pops pretcode; rt_sigreturn runs with rsp just above it.
        let r = read_frame(&mem, h.rsp + 8).unwrap();
        assert_eq!(r.regs, c);
        assert_eq!(r.mask, 0x1234);
        assert_eq!(r.xsave.unwrap().region, xsave().region);
    }

    #[test]
    fn sa_onstack_moves_the_frame_to_the_alternate_stack_unless_already_on_it() {
        let mut mem = GuestMemory::new(MEM).unwrap();
        let mut alt = [0u8; 24];
        alt[..8].copy_from_slice(&0x60_0000u64.to_le_bytes());
        alt[16..].copy_from_slice(&0x10_0000u64.to_le_bytes());
        let guard = MEM - (8 << 20);
        let h = push_frame(&mut mem, &ctx(), &xsave(), &delivery(SA_ONSTACK), &alt, guard).unwrap();
        assert!((0x60_0000..0x70_0000).contains(&h.rsp), "{:#x}", h.rsp);
        let mut on_alt = ctx();
        on_alt.rsp = 0x6f_0000;
        let h2 = push_frame(&mut mem, &on_alt, &xsave(), &delivery(SA_ONSTACK), &alt, guard).unwrap();
        assert!(h2.rsp < 0x6f_0000 - RED_ZONE, "nested: below the interrupted frame");
        let h3 = push_frame(&mut mem, &ctx(), &xsave(), &delivery(0), &alt, guard).unwrap();
        assert!(h3.rsp > 0x70_0000, "without SA_ONSTACK the normal stack");
    }

    #[test]
    fn a_frame_that_would_not_fit_is_refused_not_written() {
        let mut mem = GuestMemory::new(MEM).unwrap();
        let guard = MEM - (8 << 20);
        let mut c = ctx();
        c.rsp = guard + PAGE_SIZE + 100; // just above the guard page: the frame would cross it
        assert!(matches!(
            push_frame(&mut mem, &c, &xsave(), &delivery(0), &[0; 24], guard),
            Err(FrameError::Unwritable { .. })
        ));
        c.rsp = USER_START + 16;
        assert!(push_frame(&mut mem, &c, &xsave(), &delivery(0), &[0; 24], guard).is_err());
        c.rsp = 0x10;
        assert!(push_frame(&mut mem, &c, &xsave(), &delivery(0), &[0; 24], guard).is_err(), "wraps around");
        let mut d = delivery(0);
        d.action.flags = 0;
        assert_eq!(
            push_frame(&mut mem, &ctx(), &xsave(), &d, &[0; 24], guard),
            Err(FrameError::NoRestorer { sig: 10 })
        );
    }

    #[test]
    fn a_scribbled_frame_cannot_smuggle_a_kernel_address_or_block_sigkill() {
        let mut mem = GuestMemory::new(MEM).unwrap();
        let h = push_frame(&mut mem, &ctx(), &xsave(), &delivery(0), &[0; 24], MEM - (8 << 20)).unwrap();
        let uc = h.rsp + 8;
        mem.write_user(UserAddr::new(uc + 296), &u64::MAX.to_le_bytes()).unwrap();
        let r = read_frame(&mem, uc).unwrap();
        assert_eq!(r.mask & (1 << 8), 0, "SIGKILL never blocked");
        mem.write_user(UserAddr::new(uc + 40 + 16 * 8), &0xffff_8000_0000_0000u64.to_le_bytes()).unwrap();
        assert!(matches!(read_frame(&mem, uc), Err(FrameError::BadRegisters { .. })));
        assert!(matches!(read_frame(&mem, MEM - 8), Err(FrameError::Unreadable { .. })));
        assert!(matches!(read_frame(&mem, u64::MAX - 100), Err(FrameError::Unreadable { .. })));
    }

    #[test]
    fn faults_map_to_linuxs_signals() {
        assert_eq!(fault_signal(0, 0), Some((8, 1)));
        assert_eq!(fault_signal(6, 0), Some((4, 2)));
        assert_eq!(fault_signal(13, 0), Some((11, 0x80)));
        assert_eq!(fault_signal(14, 4), Some((11, 1)));
        assert_eq!(fault_signal(14, 5), Some((11, 2)));
        assert_eq!(fault_signal(17, 0), Some((7, 2)));
        assert_eq!(fault_signal(8, 0), None, "a double fault is the monitor's business");
    }
}
