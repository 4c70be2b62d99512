//! The operator's tables: `mhc-node status` and the demo print the admin status answer.

/// Prints the admin status answer as tables (members, then contents).
pub fn print_status(v: &serde_json::Value) {
    let me = &v["self"];
    let s = |x: &serde_json::Value| match x {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    println!("mode: {}", s(&v["mode"]));
    // An origin that elects its primary says where it stands.
    let ha = &me["ha"];
    if ha.is_object() && ha["state"] != "alone" {
        println!(
            "ha: {} (epoch {}, primary {})",
            s(&ha["state"]),
            s(&ha["epoch"]),
            s(&ha["primary"])
        );
    }
    println!(
        "{:<54} {:<17} {:<10} {:<7} {:<22} {:>6}",
        "PEER", "ROLE", "REGION", "STATE", "HTTP", "CONNS"
    );
    let mut rows = vec![me.clone()];
    if let Some(members) = v["members"].as_array() {
        rows.extend(members.iter().cloned());
    }
    for m in rows {
        println!(
            "{:<54} {:<17} {:<10} {:<7} {:<22} {:>6}",
            s(&m["peer_id"]),
            s(&m["role"]),
            s(&m["region"]),
            s(&m["state"]),
            s(&m["addrs"]["http"]),
            s(&m["load"]["connections_open"]),
        );
    }
    if let Some(contents) = v["contents"].as_array() {
        println!();
        println!(
            "{:<32} {:>7} {:>9} {:>12}  TITLE",
            "CONTENT", "VERSION", "SEGMENTS", "BYTES"
        );
        for c in contents {
            println!(
                "{:<32} {:>7} {:>9} {:>12}  {}",
                s(&c["id"]),
                s(&c["version"]),
                s(&c["segments"]),
                s(&c["bytes"]),
                s(&c["title"])
            );
        }
    }
}
