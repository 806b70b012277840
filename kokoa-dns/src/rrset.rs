//! Record ids for providers that store record *sets* (name + type, one TTL, many values):
//! PowerDNS and Route53. A record is one value of a set, and its id is `name|type|value`,
//! e.g. `app.hoge.com|A|203.0.113.10`, so the id says which set to change and how.

use kokoa_core::{DnsName, RecordData, RecordType};

use crate::{Error, RecordId};

/// The type named `kind` (`A`, `AAAA`, `CNAME`, `TXT`); `None` for types outside the model.
pub(crate) fn record_type(kind: &str) -> Option<RecordType> {
    [
        RecordType::A,
        RecordType::Aaaa,
        RecordType::Cname,
        RecordType::Txt,
    ]
    .into_iter()
    .find(|t| t.as_str() == kind)
}

/// The id of the value `data` in the set `name`.
pub(crate) fn record_id(name: &DnsName, data: &RecordData) -> RecordId {
    RecordId::new(format!("{name}|{}|{}", data.record_type(), data.value()))
}

/// The name and value an id of [`record_id`] stands for.
pub(crate) fn parse_id(
    provider: &'static str,
    id: &RecordId,
) -> Result<(DnsName, RecordData), Error> {
    let invalid = |reason| Error::InvalidRecordId {
        provider,
        id: id.as_str().chars().take(300).collect(),
        reason,
    };
    let mut parts = id.as_str().splitn(3, '|');
    let (Some(name), Some(kind), Some(value)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid("record ids of this provider are name|type|value"));
    };
    let name = DnsName::parse(name).map_err(|_| invalid("the name is not a DNS name"))?;
    let kind = record_type(kind).ok_or_else(|| invalid("the type is not A, AAAA, CNAME or TXT"))?;
    let data =
        RecordData::parse(kind, value).map_err(|_| invalid("the value does not fit the type"))?;
    Ok((name, data))
}

#[cfg(any(feature = "powerdns", feature = "route53"))]
pub(crate) fn not_found(provider: &'static str, name: &DnsName, data: &RecordData) -> Error {
    Error::NotFound {
        provider,
        detail: format!(
            "no {} record {} at {name}",
            data.record_type(),
            data.value()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_bad_ones_are_refused() -> Result<(), Box<dyn std::error::Error>> {
        let name = DnsName::parse("app.hoge.com")?;
        for data in [
            RecordData::parse(RecordType::A, "203.0.113.10")?,
            RecordData::parse(RecordType::Aaaa, "2001:db8::1")?,
            RecordData::parse(RecordType::Cname, "edge.hoge.com")?,
            RecordData::parse(RecordType::Txt, "a|b c")?,
        ] {
            let id = record_id(&name, &data);
            assert_eq!(parse_id("test", &id)?, (name.clone(), data));
        }
        assert_eq!(
            record_id(&name, &RecordData::parse(RecordType::A, "203.0.113.10")?).as_str(),
            "app.hoge.com|A|203.0.113.10"
        );
        for bad in [
            "app.hoge.com|A",
            "app.hoge.com|MX|mail.hoge.com",
            "app.hoge.com|A|2001:db8::1",
            "-x|A|1.2.3.4",
        ] {
            let error = parse_id("test", &RecordId::new(bad)).expect_err(bad);
            assert!(error.to_string().contains(bad), "{error}");
        }
        Ok(())
    }
}
