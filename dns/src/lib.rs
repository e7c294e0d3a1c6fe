//! placeholder until the DNS server lands
