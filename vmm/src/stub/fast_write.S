# snapcall's syscall fast paths, which return to the program without leaving the VM:
# write(1|2, buf, count) copies the data into the output ring in guest memory (the monitor
# drains the ring at the next exit), and read(0, ...) once the request on fd 0 has been read
# to its end returns 0 (end of input), as the monitor would. Anything else goes to the
# doorbell stub (a VM exit).
#
# Built by vmm/src/stub/build.sh into fast_write.bin, which vmm embeds; a test reassembles
# it when binutils are installed and compares. Addresses must match vmm/src/layout.rs.
#
# Runs at CPL0 on VT-x/AMD-V and at CPL3 under kvm-pvm, on the program's stack pointer (it
# never touches the stack). Nothing in the header or ring is trusted: the program can write
# them; every check below only protects the program from itself and keeps the copy inside
# user memory and the ring. The monitor re-validates everything it drains.

.intel_syntax noprefix
.code64

.set HDR,            0x20000
.set H_ENABLED,      HDR + 0      # bit 0: fd 0 is the request, read to its end; bit 1: fd 1 is
                                   # the response stream, bit 2: fd 2 the log
.set H_USED,         HDR + 8      # bytes of the ring in use
.set H_MEM_END,      HDR + 16     # end of guest memory
.set H_SAVE_RDI,     HDR + 24
.set H_SAVE_RSI,     HDR + 32
.set H_FAST_READS,   HDR + 40     # reads answered here since the monitor last looked
.set H_FRAME_RIP,    HDR + 64     # the iretq frame back to the program
.set H_FRAME_CS,     HDR + 72
.set H_FRAME_RFLAGS, HDR + 80
.set H_FRAME_RSP,    HDR + 88
.set H_FRAME_SS,     HDR + 96
.set RING,           0x21000
.set RING_SIZE,      0x10000
.set USER_START,     0x200000
.set DOORBELL_STUB,  0xA000
.set USER_CS,        0x33
.set USER_DS,        0x2b

.global _start
_start:
    test rax, rax                   # read?
    jz read
    cmp rax, 1                      # write?
    jne slow
    cmp rdi, 1                      # fd 1 or 2, and enabled by the monitor
    jb slow
    cmp rdi, 2
    ja slow
    bt qword ptr [H_ENABLED], rdi
    jnc slow
    cmp rdx, RING_SIZE - 16         # count fits the ring at all
    ja slow
    cmp rsi, USER_START             # buf inside user memory (below: the monitor's pages)
    jb slow
    mov [H_FRAME_RIP], rcx          # rcx, r11: the program's rip and rflags (from syscall)
    mov [H_FRAME_RFLAGS], r11
    mov rcx, [H_MEM_END]
    sub rcx, rdx
    jb restore_slow
    cmp rsi, rcx                    # buf + count <= memory end
    ja restore_slow
    mov r11, [H_USED]
    cmp r11, RING_SIZE
    ja restore_slow
    lea rcx, [rdx + 23]             # entry: u64 fd, u64 count, data padded to 8
    and rcx, -8
    add rcx, r11
    cmp rcx, RING_SIZE
    ja restore_slow
    mov [H_USED], rcx
    mov [r11 + RING], rdi
    mov [r11 + RING + 8], rdx
    mov [H_SAVE_RDI], rdi
    mov [H_SAVE_RSI], rsi
    lea rdi, [r11 + RING + 16]
    mov rcx, rdx
    rep movsb                       # DF is clear: FMASK clears it on syscall
    mov rdi, [H_SAVE_RDI]
    mov rsi, [H_SAVE_RSI]
    mov [H_FRAME_RSP], rsp
    mov qword ptr [H_FRAME_CS], USER_CS
    mov qword ptr [H_FRAME_SS], USER_DS
    mov rax, rdx                    # write returns count
    mov rsp, H_FRAME_RIP
    iretq
restore_slow:
    mov rcx, [H_FRAME_RIP]
    mov r11, [H_FRAME_RFLAGS]
slow:
    jmp DOORBELL_STUB

read:                               # read(0, ...) at the end of the request: 0, buf untouched
    test rdi, rdi
    jnz slow
    bt qword ptr [H_ENABLED], 0
    jnc slow
    inc qword ptr [H_FAST_READS]
    mov [H_FRAME_RIP], rcx
    mov [H_FRAME_RFLAGS], r11
    mov [H_FRAME_RSP], rsp
    mov qword ptr [H_FRAME_CS], USER_CS
    mov qword ptr [H_FRAME_SS], USER_DS
    xor eax, eax
    mov rsp, H_FRAME_RIP
    iretq
