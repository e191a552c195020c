//! Prints what each check costs on this machine, to decide what may run on a core:
//! `cargo run --release -p uringmq-auth --example auth_costs`.

use std::hint::black_box;
use std::time::Instant;

use uringmq_auth::{Access, AclFile, ClientInfo, PasswordFile, Scheme};

fn per_call(name: &str, iterations: u32, mut f: impl FnMut()) {
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    let each = start.elapsed() / iterations;
    println!("{name:<48} {each:>12.2?} per call");
}

fn main() {
    let mosquitto = "m:$7$101$tG+JKHG0iElpo/LZ$Mx6Nkt32ylxwt8li2CohJx8IMf/hstIdqJfrly0T1gCGdjEuaZHWiPsc8owzWX71LzDXxmlSCyoW15Shh2C+Bg==\n";
    let mut pw = PasswordFile::parse(mosquitto).expect("vector parses");
    pw.set("a", b"secret", Scheme::Argon2id).expect("hash");
    pw.set("p", b"secret", Scheme::Pbkdf2Sha512).expect("hash");
    per_call("verify $7$ 101 rounds (mosquitto_passwd)", 200, || {
        black_box(pw.verify("m", b"correct horse"));
    });
    per_call("verify $7$ 20,000 rounds (our default)", 5, || {
        black_box(pw.verify("p", b"secret"));
    });
    per_call("verify argon2id m=19MiB t=2 (our default)", 5, || {
        black_box(pw.verify("a", b"secret"));
    });

    let mut text = String::from("topic read public/#\n");
    for u in 0..1000 {
        text.push_str(&format!(
            "user u{u}\ntopic readwrite home/u{u}/#\ntopic deny home/u{u}/secret\n"
        ));
    }
    text.push_str("pattern write devices/%c/up\npattern read devices/%c/down/#\npattern deny devices/%c/down/blocked\n");
    let acl = AclFile::parse(&text).expect("acl parses");
    let client = ClientInfo::new("dev42", Some("u500"), "bench");
    per_call("ACL publish, user rule hit (1000 users)", 1_000_000, || {
        black_box(acl.check(
            &client,
            Access::Publish,
            black_box("home/u500/kitchen/temp"),
        ));
    });
    per_call("ACL receive, pattern hit", 1_000_000, || {
        black_box(acl.check(
            &client,
            Access::Receive,
            black_box("devices/dev42/down/cmd"),
        ));
    });
    per_call("ACL receive, denied (no rule)", 1_000_000, || {
        black_box(acl.check(&client, Access::Receive, black_box("other/topic/x")));
    });
    per_call("ACL subscribe, covered", 1_000_000, || {
        black_box(acl.check(&client, Access::Subscribe, black_box("home/u500/+/temp")));
    });
}
