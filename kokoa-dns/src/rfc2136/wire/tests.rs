use proptest::prelude::*;

use super::*;

fn name(text: &str) -> Name {
    Name::parse(text).expect("test name")
}

/// A response as a server writes it: `app.hoge.com. A` asked, answered with a CNAME to
/// `edge.hoge.com.` whose names point back into the question.
fn compressed_answer() -> Vec<u8> {
    let mut bytes = vec![
        0xbe, 0xef, 0x84, 0x00, // id, QR AA
        0, 1, 0, 1, 0, 0, 0, 0, // one question, one answer
    ];
    // 12: app.hoge.com.
    bytes.extend(b"\x03app\x04hoge\x03com\x00");
    bytes.extend([0, 1, 0, 1]);
    // The answer's owner is a pointer to 12.
    bytes.extend([0xc0, 12]);
    bytes.extend([0, 5, 0, 1, 0, 0, 0, 30, 0, 7]);
    // edge + pointer to hoge.com. at 16.
    bytes.extend(b"\x04edge\xc0\x10");
    bytes
}

#[test]
fn compressed_names_are_followed() -> Result<(), WireError> {
    let message = Message::decode(&compressed_answer())?;
    assert_eq!(message.id, 0xbeef);
    assert!(message.is_response());
    assert_eq!(message.rcode(), Rcode::NOERROR);
    assert_eq!(message.questions[0].name, name("app.hoge.com"));
    let answer = &message.answers[0];
    assert_eq!(answer.name, name("app.hoge.com"));
    assert_eq!(answer.ttl, 30);
    assert_eq!(answer.data, RData::Cname(name("edge.hoge.com")));
    // Written back without compression, it reads the same.
    assert_eq!(Message::decode(&message.encode()?)?, message);
    Ok(())
}

#[test]
fn pointers_that_do_not_point_backwards_are_refused() {
    let mut looped = compressed_answer();
    // The answer's owner points at itself.
    let at = looped.len() - 19;
    assert_eq!(looped[at], 0xc0);
    looped[at + 1] = at as u8;
    assert_eq!(Message::decode(&looped), Err(WireError::BadPointer(at)));

    // The CNAME target's pointer aims at the answer's own pointer, which leads back to
    // the question: still backwards, so accepted...
    let mut chained = compressed_answer();
    let last = chained.len() - 1;
    chained[last] = (at) as u8;
    let message = Message::decode(&chained).expect("backwards chain");
    assert_eq!(
        message.answers[0].data,
        RData::Cname(name("edge.app.hoge.com"))
    );
    // ...but a label sequence that runs into a pointer to its own start loops: refused.
    let mut bytes = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    bytes.extend(b"\x01a\xc0\x0c");
    bytes.extend([0, 1, 0, 1]);
    assert_eq!(Message::decode(&bytes), Err(WireError::BadPointer(14)));
}

#[test]
fn malformed_messages_are_refused() {
    let good = compressed_answer();
    assert_eq!(
        Message::decode(&good[..good.len() - 1]),
        Err(WireError::Truncated(good.len() - 1))
    );
    let mut trailing = good;
    trailing.push(0);
    assert_eq!(Message::decode(&trailing), Err(WireError::TrailingBytes(1)));
    // An A record of 3 bytes.
    let mut bytes = vec![0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0];
    bytes.extend(b"\x01a\x00");
    bytes.extend([0, 1, 0, 1, 0, 0, 0, 30, 0, 3, 1, 2, 3]);
    assert_eq!(
        Message::decode(&bytes),
        Err(WireError::BadData {
            kind: TYPE_A,
            at: 25
        })
    );
    // Label type 0b01.
    let mut bytes = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x41];
    bytes.extend([0, 1, 0, 1]);
    assert_eq!(
        Message::decode(&bytes),
        Err(WireError::LabelType { kind: 0x41, at: 12 })
    );
    // A name of 256 bytes: four 63-byte labels and a 0-byte root are 257.
    let long: Vec<Vec<u8>> = (0..4).map(|_| vec![b'a'; 63]).collect();
    assert!(Name::from_labels(long).is_err());
    let longest: Vec<Vec<u8>> = vec![
        vec![b'a'; 63],
        vec![b'a'; 63],
        vec![b'a'; 63],
        vec![b'a'; 61],
    ];
    assert!(Name::from_labels(longest).is_ok());
}

#[test]
fn encoding_refuses_data_that_does_not_fit_the_type() {
    let mut message = Message::new(1, OPCODE_UPDATE);
    message.authorities.push(Record {
        name: name("a.hoge.com"),
        kind: TYPE_AAAA,
        class: CLASS_IN,
        ttl: 30,
        data: RData::A([192, 0, 2, 1].into()),
    });
    assert!(message.encode().is_err());
    message.authorities[0].data = RData::Other(vec![1, 2, 3, 4]);
    assert!(message.encode().is_err());
    message.authorities[0].kind = 99;
    assert!(message.encode().is_ok());
}

#[test]
fn names_and_rcodes_print_safely() {
    let odd = Name::from_labels(vec![b"a.b".to_vec(), vec![0, b'\\', b' ']]).expect("name");
    assert_eq!(odd.to_string(), "a\\046b.\\000\\092\\032.");
    assert_eq!(odd.to_hostname(), None);
    assert_eq!(Name::root().to_string(), ".");
    assert_eq!(
        name("App.Hoge.COM").to_hostname(),
        Hostname::parse("app.hoge.com").ok()
    );
    assert!(name("App.Hoge.COM").eq_ignore_case(&name("app.hoge.com.")));
    assert!(Name::parse("bad name").is_err());
    assert_eq!(Rcode::BADKEY.to_string(), "BADKEY");
    assert_eq!(Rcode(12).to_string(), "RCODE 12");
}

fn arb_name() -> impl Strategy<Value = Name> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 1..=20), 0..6)
        .prop_map(|labels| Name::from_labels(labels).expect("short labels"))
}

fn arb_data() -> impl Strategy<Value = (u16, RData)> {
    prop_oneof![
        any::<u16>().prop_map(|kind| (kind, RData::Empty)),
        any::<[u8; 4]>().prop_map(|ip| (TYPE_A, RData::A(ip.into()))),
        any::<[u8; 16]>().prop_map(|ip| (TYPE_AAAA, RData::Aaaa(ip.into()))),
        arb_name().prop_map(|target| (TYPE_CNAME, RData::Cname(target))),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..4)
            .prop_map(|strings| (TYPE_TXT, RData::Txt(strings))),
        (
            arb_name(),
            0..=MAX_TIME,
            any::<u16>(),
            prop::collection::vec(any::<u8>(), 0..64),
            any::<u16>(),
            any::<u16>(),
            prop::collection::vec(any::<u8>(), 0..8),
        )
            .prop_map(
                |(algorithm, time_signed, fudge, mac, original_id, error, other)| {
                    (
                        TYPE_TSIG,
                        RData::Tsig(Tsig {
                            algorithm,
                            time_signed,
                            fudge,
                            mac,
                            original_id,
                            error: Rcode(error),
                            other,
                        }),
                    )
                }
            ),
        (
            prop_oneof![Just(TYPE_SOA), Just(15u16), Just(99u16), Just(65_280u16)],
            prop::collection::vec(any::<u8>(), 1..30)
        )
            .prop_map(|(kind, bytes)| (kind, RData::Other(bytes))),
    ]
}

fn arb_record() -> impl Strategy<Value = Record> {
    (arb_name(), arb_data(), any::<u16>(), any::<u32>()).prop_map(
        |(name, (kind, data), class, ttl)| Record {
            name,
            kind,
            class,
            ttl,
            data,
        },
    )
}

fn arb_message() -> impl Strategy<Value = Message> {
    let records = || prop::collection::vec(arb_record(), 0..4);
    (
        any::<u16>(),
        any::<u16>(),
        prop::collection::vec(
            (arb_name(), any::<u16>(), any::<u16>()).prop_map(|(name, kind, class)| Question {
                name,
                kind,
                class,
            }),
            0..3,
        ),
        records(),
        records(),
        records(),
    )
        .prop_map(
            |(id, flags, questions, answers, authorities, additionals)| Message {
                id,
                flags,
                questions,
                answers,
                authorities,
                additionals,
            },
        )
}

proptest! {
    #[test]
    fn encoded_messages_decode_to_the_same_message(message in arb_message()) {
        let bytes = message.encode().expect("generated messages encode");
        prop_assert_eq!(Message::decode(&bytes), Ok(message));
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_what_decodes_is_stable(
        bytes in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        if let Ok(message) = Message::decode(&bytes) {
            let again = message.encode().expect("a decoded message encodes");
            prop_assert_eq!(Message::decode(&again), Ok(message));
        }
    }

    #[test]
    fn damaged_messages_never_panic(
        message in arb_message(),
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = message.encode().expect("generated messages encode");
        for (at, value) in damage {
            let at = at.index(bytes.len());
            bytes[at] = value;
        }
        if let Ok(message) = Message::decode(&bytes) {
            let again = message.encode().expect("a decoded message encodes");
            prop_assert_eq!(Message::decode(&again), Ok(message));
        }
    }
}
