//! Segments keep their owner and mode, checked per client as tmpfs would (issue 10). Runs real
//! programs as two unprivileged users in the socket's group; needs root to make them (CI is).

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use dsm_e2e::{artifacts, c_program, run, unique, Daemon};

/// Makes (once) the group `dsmtest` and its users `dsmtest1`, `dsmtest2`; their (uid, gid).
fn users() -> Option<[(u32, u32); 2]> {
    // SAFETY: a plain getter.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: cannot make test users; skipped");
        return None;
    }
    let _ = Command::new("groupadd").arg("-f").arg("dsmtest").status();
    let mut ids = [(0, 0); 2];
    for (i, user) in ["dsmtest1", "dsmtest2"].iter().enumerate() {
        let exists = Command::new("id")
            .arg(user)
            .output()
            .is_ok_and(|o| o.status.success());
        if !exists {
            let made = Command::new("useradd")
                .args(["-M", "-N", "-g", "dsmtest", "-s", "/usr/sbin/nologin", user])
                .status()
                .expect("useradd");
            assert!(made.success(), "useradd {user}");
        }
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, user]).output().expect("id");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .expect("numeric id")
        };
        ids[i] = (id("-u"), id("-g"));
    }
    Some(ids)
}

/// Runs `perm NAME ARGS…` against `d` as `who` (None: root); its one line of answer.
fn perm(d: &Daemon, who: Option<(u32, u32)>, args: &[&str]) -> String {
    let prog = c_program("perm");
    let mut cmd = match who {
        Some((uid, gid)) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups")
                .arg("--")
                .arg(&prog);
            c
        }
        None => Command::new(&prog),
    };
    cmd.args(args)
        .env("LD_PRELOAD", &artifacts().libdsm)
        .env("DSM_SOCKET", &d.socket);
    let out = run(cmd);
    out.assert_ok();
    out.stdout.trim().to_string()
}

#[test]
fn owner_and_mode_are_enforced_for_every_client() {
    let Some([alice, bob]) = users() else { return };
    let d = Daemon::start(1);
    // The socket is the group's, as docs/operations.md sets it up; its directory is open.
    let dir = d.socket.parent().expect("socket dir");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&d.socket, None, Some(alice.1)).unwrap();

    let secret = format!("/{}", unique("secret"));
    assert_eq!(perm(&d, None, &[&secret, "create", "600"]), "ok");
    for args in [["open", "ro"], ["open", "rw"]] {
        assert_eq!(
            perm(&d, Some(alice), &[&secret, args[0], args[1]]),
            "EACCES",
            "{args:?}"
        );
    }
    assert_eq!(perm(&d, Some(alice), &[&secret, "truncate"]), "EACCES");
    assert_eq!(perm(&d, Some(alice), &[&secret, "unlink"]), "EACCES");
    assert_eq!(
        perm(&d, None, &[&secret, "read"]),
        "read Z",
        "root's data intact"
    );

    let mine = format!("/{}", unique("mine"));
    assert_eq!(perm(&d, Some(alice), &[&mine, "create", "644"]), "ok");
    assert_eq!(
        perm(&d, Some(bob), &[&mine, "read"]),
        "read Z",
        "others may read 0644"
    );
    assert_eq!(perm(&d, Some(bob), &[&mine, "open", "rw"]), "EACCES");
    assert_eq!(perm(&d, Some(bob), &[&mine, "truncate"]), "EACCES");
    assert_eq!(
        perm(&d, Some(bob), &[&mine, "stat"]),
        format!("{} 644", alice.0)
    );
    assert_eq!(
        perm(&d, Some(bob), &[&mine, "unlink"]),
        "EACCES",
        "only its owner removes it"
    );
    assert_eq!(perm(&d, Some(alice), &[&mine, "unlink"]), "ok");
    assert_eq!(perm(&d, None, &[&secret, "unlink"]), "ok");
}

/// `dsmctl rm` removes a name with the permissions of whoever runs it: not another user's.
#[test]
fn dsmctl_rm_removes_a_name_with_the_callers_permissions() {
    let Some([alice, bob]) = users() else { return };
    let d = Daemon::start(1);
    let dir = d.socket.parent().expect("socket dir");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&d.socket, None, Some(alice.1)).unwrap();
    let name = format!("/{}", unique("rm"));
    assert_eq!(perm(&d, Some(alice), &[&name, "create", "644"]), "ok");
    let rm = |(uid, gid): (u32, u32)| {
        let out = Command::new("setpriv")
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .arg("--clear-groups")
            .arg("--")
            .arg(&artifacts().dsmctl)
            .arg("--socket")
            .arg(&d.socket)
            .args(["rm", &name])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, stderr) = rm(bob);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&name), "{stderr}");
    assert_eq!(
        perm(&d, Some(bob), &[&name, "read"]),
        "read Z",
        "still there"
    );
    assert_eq!(rm(alice).0, Some(0));
    assert_eq!(
        perm(&d, None, &[&name, "stat"]),
        "No such file or directory"
    );
}
