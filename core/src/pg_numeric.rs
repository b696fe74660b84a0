//! PostgreSQL's binary `numeric` wire format to its exact decimal text,
//! digit by digit, so a remote numeric never passes through a float.

/// Decodes a binary numeric: base-10000 digit groups with a weight (the
/// power of 10000 of the first group), a sign and a display scale.
pub fn binary_to_text(raw: &[u8]) -> Result<String, &'static str> {
    let word = |i: usize| -> Result<u16, &'static str> {
        raw.get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or("truncated numeric")
    };
    let ndigits = word(0)? as usize;
    let weight = word(2)? as i16 as i32;
    let sign = word(4)?;
    let dscale = word(6)? as usize;
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        0x0000 | 0x4000 => {}
        _ => return Err("invalid numeric sign"),
    }
    // As PostgreSQL's numeric_recv: a scale it can hold, base-10000
    // digits, nothing after them.
    if dscale > 0x3FFF {
        return Err("invalid numeric scale");
    }
    if raw.len() != 8 + 2 * ndigits {
        return Err("numeric length does not match its digit count");
    }
    let digits = (0..ndigits)
        .map(|i| word(8 + 2 * i))
        .collect::<Result<Vec<u16>, _>>()?;
    if digits.iter().any(|&d| d > 9999) {
        return Err("invalid numeric digit (above 9999)");
    }
    let group = |g: i32| -> u16 {
        if g < 0 {
            0
        } else {
            digits.get(g as usize).copied().unwrap_or(0)
        }
    };
    let mut out = String::new();
    if sign == 0x4000 {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        out.push_str(&group(0).to_string());
        for g in 1..=weight {
            out.push_str(&format!("{:04}", group(g)));
        }
    }
    if dscale > 0 {
        let mut frac = String::with_capacity(dscale + 4);
        let mut g = weight + 1;
        while frac.len() < dscale {
            frac.push_str(&format!("{:04}", group(g)));
            g += 1;
        }
        frac.truncate(dscale);
        out.push('.');
        out.push_str(&frac);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::binary_to_text;

    fn encode(groups: &[u16], weight: i16, sign: u16, dscale: u16) -> Vec<u8> {
        let mut out = Vec::new();
        for w in [groups.len() as u16, weight as u16, sign, dscale] {
            out.extend_from_slice(&w.to_be_bytes());
        }
        for d in groups {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out
    }

    #[test]
    fn decodes_every_digit() {
        assert_eq!(
            binary_to_text(&encode(&[1234, 5678, 9012], 1, 0, 4)).unwrap(),
            "12345678.9012"
        );
        assert_eq!(
            binary_to_text(&encode(&[123], -1, 0x4000, 6)).unwrap(),
            "-0.012300"
        );
        assert_eq!(binary_to_text(&encode(&[], 0, 0, 2)).unwrap(), "0.00");
        assert_eq!(binary_to_text(&encode(&[1], 2, 0, 0)).unwrap(), "100000000");
        // 38 significant digits, more than any float carries.
        assert_eq!(
            binary_to_text(&encode(
                &[1234, 5678, 9012, 3456, 7890, 1234, 5678, 9012, 3456, 78],
                4,
                0,
                18
            ))
            .unwrap(),
            "12345678901234567890.123456789012345600"
        );
    }

    #[test]
    fn special_values_and_garbage() {
        assert_eq!(binary_to_text(&encode(&[], 0, 0xC000, 0)).unwrap(), "NaN");
        assert_eq!(
            binary_to_text(&encode(&[], 0, 0xF000, 0)).unwrap(),
            "-Infinity"
        );
        assert!(binary_to_text(&[0, 1]).is_err());
        assert!(binary_to_text(&encode(&[1], 0, 0x1234, 0)).is_err());
    }

    /// A hostile server's digits outside base 10000 would print as five
    /// digits and shift every following one: refused, as numeric_recv does.
    #[test]
    fn refuses_what_numeric_recv_refuses() {
        assert_eq!(
            binary_to_text(&encode(&[1, 10000], 1, 0, 0)),
            Err("invalid numeric digit (above 9999)")
        );
        assert!(binary_to_text(&encode(&[9999, 9999], 1, 0, 0)).is_ok());
        let mut trailing = encode(&[1], 0, 0, 0);
        trailing.extend_from_slice(&[0, 7]);
        assert!(binary_to_text(&trailing).is_err());
        assert_eq!(
            binary_to_text(&encode(&[1], 0, 0, 0x4000)),
            Err("invalid numeric scale")
        );
    }
}
