//! Addresses and CIDR blocks as Istio accepts them in `ipBlocks` and subnets.
use std::net::IpAddr;

/// An address or a block: "10.0.0.1", "10.0.0.0/16", "2001:db8::/32".
pub fn parse(text: &str) -> Result<(IpAddr, u8), String> {
    let (address, prefix) = match text.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (text, None),
    };
    let address: IpAddr = address
        .parse()
        .map_err(|_| format!("{text:?} is not an IP address or CIDR block"))?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(prefix) => prefix
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("{text:?} has an invalid prefix length (0–{max})"))?,
    };
    Ok((address, prefix))
}

/// Whether `ip` lies inside `block`/`prefix` (families must agree).
pub fn in_block(ip: IpAddr, block: IpAddr, prefix: u8) -> bool {
    match (ip, block) {
        (IpAddr::V4(ip), IpAddr::V4(block)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            u32::from(ip) & mask == u32::from(block) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(block)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            u128::from(ip) & mask == u128::from(block) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_and_addresses() {
        assert_eq!(
            parse("10.1.0.0/16"),
            Ok(("10.1.0.0".parse().expect("ip"), 16))
        );
        assert_eq!(parse("10.1.2.3"), Ok(("10.1.2.3".parse().expect("ip"), 32)));
        assert_eq!(parse("2001:db8::/32").map(|(_, p)| p), Ok(32));
        for bad in [
            "10.1.0.0/33",
            "10.1.0/16",
            "bogus",
            "10.0.0.0/",
            "::1/129",
            "",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
