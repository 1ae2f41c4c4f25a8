//! The guarantee under load: every call runs in a VM no other call ran in, and no call sees
//! memory another call wrote. `counter` increments a global and prints it; a call that
//! reused a VM, or memory another call had written, would print 2 or more. Eight
//! connections call it at once, through the pool's VMs and the inline ones alike.

mod serve_support;

use serve_support::{functions_dir, scaled, Client, Server};

/// `conns` keep-alive connections each POST `path` `per_conn` times at once (each call a body of
/// its own); every answer must be 200 with `want`.
fn call_at_once(srv: &Server, path: &'static str, conns: usize, per_conn: usize, want: &'static str) {
    let addr = srv.addr;
    let threads: Vec<_> = (0..conns)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                for i in 0..per_conn {
                    let r = c.request("POST", path, &[], format!("conn{t}-call{i}").as_bytes());
                    assert_eq!(r.status, 200, "conn {t} call {i}: {}", r.text());
                    assert_eq!(r.text(), want, "conn {t} call {i} saw what another call left");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a client thread failed");
    }
}

#[test]
fn concurrent_calls_never_see_another_calls_memory() {
    let dir = functions_dir(&["counter"]);
    let srv = Server::start(&dir, &[]);
    let (conns, per_conn) = (8, scaled(150));
    let ready_before = srv.metric("snapcall_pool_ready_vms");
    let created_before = srv.metric("snapcall_vms_created_total");
    call_at_once(&srv, "/counter", conns, per_conn, "counter=1\n");
    // One VM per call at least: those made during the run, those ready before it, and the
    // one the filler may have been making as it started (counted in `created_before`).
    let created = srv.metric("snapcall_vms_created_total") - created_before;
    let vms = created + ready_before + 1.0;
    assert!(vms >= (conns * per_conn) as f64, "{vms} VMs ({created} made) for {} calls", conns * per_conn);
    // Each call either found a VM ready or made one inline, and /metrics says which, per function.
    let hits = srv.metric("snapcall_pool_function_hits_total{function=\"counter\"}");
    let misses = srv.metric("snapcall_pool_function_misses_total{function=\"counter\"}");
    assert_eq!(hits + misses, (conns * per_conn) as f64, "{hits} hits + {misses} misses");
    // Some hits waited for the VM the pool was making; those are hits too.
    let waits = srv.metric("snapcall_pool_function_waits_total{function=\"counter\"}");
    assert!(waits <= hits, "{waits} waits of {hits} hits");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A fresh VM per call (the default) under eight connections at once: `leftover` finds none
/// of the secrets it leaves, the 2 MiB window of snapshot data it writes whole included,
/// although that window is filled from huge pages earlier calls' VMs used (and wrote the
/// secret into), and although most VMs are new KVM VMs around an earlier VM's memory, reset.
#[test]
fn reused_huge_pages_and_memory_leave_no_call_anything_of_another() {
    let dir = functions_dir(&["leftover"]);
    let srv = Server::start(&dir, &[]);
    let (conns, per_conn) = (8, scaled(60));
    call_at_once(&srv, "/leftover", conns, per_conn, "clean\n");
    let reused = srv.metric("snapcall_huge_pages_reused_total");
    assert!(reused > 0.0, "no huge page was reused: the test tested new pages only");
    let memory_reused = srv.metric("snapcall_memory_reused_total");
    assert!(memory_reused > 0.0, "no memory was reused: the test tested new memory only");
    std::fs::remove_dir_all(dir).unwrap();
}

/// `--no-memory-reuse` gives every VM new memory: the same calls, none of it reused.
#[test]
fn without_memory_reuse_every_vm_gets_new_memory() {
    let dir = functions_dir(&["leftover"]);
    let srv = Server::start(&dir, &["--no-memory-reuse"]);
    call_at_once(&srv, "/leftover", 4, scaled(20), "clean\n");
    assert_eq!(srv.metric("snapcall_memory_reused_total"), 0.0);
    std::fs::remove_dir_all(dir).unwrap();
}

/// The recycled-VM-shell experiment (`--experimental-recycle-vm-shells`, never the default)
/// gives up a new VM per call but must still keep every call from seeing what another left:
/// `leftover` checks fresh mmap memory, the heap's new top, deep stack and xmm15 for the
/// secret it leaves in all of them, under eight connections at once.
#[test]
fn recycled_vm_shells_leave_no_call_anything_of_another() {
    let dir = functions_dir(&["leftover"]);
    let srv = Server::start(&dir, &["--experimental-recycle-vm-shells"]);
    let (conns, per_conn) = (8, scaled(60));
    call_at_once(&srv, "/leftover", conns, per_conn, "clean\n");
    let recycled = srv.metric("snapcall_vms_recycled_total");
    assert!(recycled > 0.0, "no VM was recycled: the test tested fresh VMs only");
    std::fs::remove_dir_all(dir).unwrap();
}
