#!/usr/bin/env python3
"""Host CPU time per call phase, from a `perf record -e cpu-clock --call-graph dwarf` profile
of a process that makes snapcall calls (vmm/examples/call_loop, `snapcall serve`, the latency
study). See docs/profiling.md.

    perf script -i perf.data -F comm,tid,ip,sym --no-inline | python3 benches/perf/phase_costs.py

Each sample is charged to the thread it ran on and to the call phase whose function is on its
stack (take_vm, start, run, release; the pool's create and restore-ahead; destroy; else the HTTP
loop); within a phase, to what the innermost frames were doing (kernel and vmm markers, checked
innermost first). Prints markdown tables of percentages of all samples.
"""

import collections
import sys

# In priority order: the first phase with a marker anywhere on a sample's stack gets it.
PHASES = [
    ("take_vm (pool pop or inline create)", ("vmm::pool::Runtime::take_vm",)),
    ("start: restore / cold load", ("vmm::function::Function::start",)),
    ("run", ("vmm::call::ReadyCall::run",)),
    ("release", ("vmm::pool::Runtime::release",)),
    ("pool: create VM", ("vmm::vm::EmptyVm::create",)),
    ("pool: restore ahead", ("vmm::snapshot::SnapshotImage::prepare",)),
    ("destroy VM", ("drop_in_place<vmm::vm::EmptyVm>", "drop_in_place<vmm::call::FinishedCall>", "kvm_destroy_vm", "kvm_vm_release")),
    ("HTTP / event loop", ("io_uring", "serve::event_loop", "serve::conn", "serve::http")),
]

# What the innermost frames say (innermost first).
DETAIL = [
    ("zeroing new pages (clear_page)", ("clear_page_erms", "clear_page_rep", "clear_page_orig", "folio_zero_user")),
    ("copying pages (copy to guest / CoW)", ("_copy_to_iter", "copy_page", "copy_mc", "__wp_page_copy_user", "do_wp_page", "memcpy", "rep_movs")),
    ("guest page fault in KVM's MMU", ("kvm_mmu_page_fault", "paging64_page_fault", "kvm_mmu_do_page_fault")),
    ("host page fault", ("handle_mm_fault", "exc_page_fault")),
    ("munmap / TLB shootdown", ("unmap_vmas", "flush_tlb", "smp_call_function", "munmap")),
    ("VM entry/exit (pvm switch, KVM_RUN)", ("pvm_", "kvm_arch_vcpu_ioctl_run", "vmx_", "svm_", "vcpu_enter_guest")),
    ("monitor syscall handling", ("vmm::syscalls::",)),
    ("KVM per-VM debugfs files", ("debugfs",)),
    ("KVM destroy", ("kvm_destroy_vm", "kvm_arch_destroy_vm", "kvm_vcpu_destroy")),
    ("KVM VM/vCPU create", ("kvm_create_vm", "kvm_vm_ioctl_create_vcpu", "kvm_dev_ioctl", "kvm_set_memory_region")),
]

# A cpu-clock sample taken while the vCPU runs guest code has no kernel frames: it lands on the
# user-space ioctl instruction of KVM_RUN. Those samples are the guest's own execution time.
GUEST = "guest code running (sample at the KVM_RUN ioctl)"


def detail_of(frames):
    if frames and frames[0] in ("__GI___ioctl", "ioctl", "__ioctl") and any("VcpuFd::run" in f for f in frames[:3]):
        return GUEST
    return classify(frames, DETAIL, "other")


def classify(frames, table, default):
    """The first entry of `table` whose markers appear in any frame."""
    for name, keys in table:
        for f in frames:
            if any(k in f for k in keys):
                return name
    return default


def main():
    phases = collections.Counter()
    details = collections.Counter()
    threads = collections.Counter()
    total = 0
    comm, frames = None, []

    def flush():
        nonlocal total
        if comm is None:
            return
        total += 1
        threads[comm] += 1
        outer_first = frames
        # The phase: the first entry of PHASES with a marker anywhere on the stack (so a call
        # made from the HTTP event loop is charged to its phase, not to the loop).
        phase = classify(outer_first, PHASES, "other (" + comm + ")")
        detail = detail_of(frames)
        phases[(comm, phase)] += 1
        details[(comm, phase, detail)] += 1

    for line in sys.stdin:
        if not line.strip():
            continue
        if not line.startswith(("\t", " ")):
            flush()
            comm, frames = line.split()[0], []
        else:
            parts = line.split(None, 1)
            frames.append(parts[1].strip() if len(parts) > 1 else "")
    flush()
    comm = None
    if not total:
        sys.exit("no samples on stdin")
    pct = lambda n: 100.0 * n / total
    print(f"{total} samples\n")
    print("| thread | share |\n|---|--:|")
    for t, n in threads.most_common():
        print(f"| {t} | {pct(n):.1f} % |")
    print("\n| thread | phase | share | of which (≥ 0.5 % of all samples) |\n|---|---|--:|---|")
    for (t, p), n in sorted(phases.items(), key=lambda kv: -kv[1]):
        if pct(n) < 0.5:
            continue
        parts = [f"{d} {pct(m):.1f} %" for (t2, p2, d), m in details.most_common() if t2 == t and p2 == p and pct(m) >= 0.5]
        print(f"| {t} | {p} | {pct(n):.1f} % | {'; '.join(parts)} |")


if __name__ == "__main__":
    main()
