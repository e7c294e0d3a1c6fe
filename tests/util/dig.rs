//! `dig` as the DNS client: [`dig`] runs one query and [`Dig`] is what it
//! printed, parsed into status, flags, sections and the EDNS line. Only
//! parsing here; what an answer should be is for the tests to say.

use std::net::SocketAddr;

use super::tool;

/// One DNS resource record as dig prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rr {
    pub name: String,
    pub ttl: u32,
    pub rtype: String,
    pub data: String,
}

/// What dig saw.
#[derive(Debug)]
pub struct Dig {
    pub status: String,
    pub flags: Vec<String>,
    pub answer: Vec<Rr>,
    pub authority: Vec<Rr>,
    /// The EDNS line (`; EDNS: version: 0, flags:; udp: 1232`), if any.
    pub edns: Option<String>,
    pub raw: String,
}

impl Dig {
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// The data of every answer record.
    pub fn answer_data(&self) -> Vec<&str> {
        self.answer.iter().map(|r| r.data.as_str()).collect()
    }
}

/// `dig @server -p port ARGS`, one try, short timeout.
pub fn dig(server: SocketAddr, args: &[&str]) -> Dig {
    let out = tool("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        .args(["+tries=1", "+time=3", "+nocookie"])
        .args(args)
        .output()
        .expect("run dig");
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    parse_dig(raw)
}

fn parse_dig(raw: String) -> Dig {
    let mut dig = Dig {
        status: String::new(),
        flags: Vec::new(),
        answer: Vec::new(),
        authority: Vec::new(),
        edns: None,
        raw: String::new(),
    };
    let mut section = "";
    for line in raw.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            dig.status = rest.split(',').next().unwrap_or("").to_owned();
        } else if let Some(rest) = line.strip_prefix(";; flags: ") {
            dig.flags = rest
                .split(';')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_owned)
                .collect();
        } else if line.starts_with("; EDNS:") {
            dig.edns = Some(line.to_owned());
        } else if line.starts_with(";; ANSWER SECTION") {
            section = "answer";
        } else if line.starts_with(";; AUTHORITY SECTION") {
            section = "authority";
        } else if line.starts_with(";;") || line.trim().is_empty() {
            section = "";
        } else if !line.starts_with(';') && !section.is_empty() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() >= 5 {
                let rr = Rr {
                    name: fields[0].to_owned(),
                    ttl: fields[1].parse().unwrap_or(u32::MAX),
                    rtype: fields[3].to_owned(),
                    data: fields[4..].join(" "),
                };
                if section == "answer" {
                    dig.answer.push(rr);
                } else {
                    dig.authority.push(rr);
                }
            }
        }
    }
    dig.raw = raw;
    dig
}
