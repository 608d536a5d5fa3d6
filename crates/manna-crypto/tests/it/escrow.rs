//! Key escrow: a key file sealed to age recipients and opened again.

use age::secrecy::ExposeSecret;
use manna_crypto::escrow::{self, EscrowError};
use manna_crypto::{
    parse_key_file, AesKey, FernetKey, KeyFileFormat, KeyFileWriter, KeyMetadata, Keyring,
};
use time::macros::datetime;
use zeroize::Zeroizing;

struct Keys {
    primary: AesKey,
    previous: AesKey,
    retired: AesKey,
    fernet: [FernetKey; 2],
}

impl Keys {
    fn new() -> Self {
        Keys {
            primary: AesKey::generate(),
            previous: AesKey::generate(),
            retired: AesKey::generate(),
            fernet: [FernetKey::generate(), FernetKey::generate()],
        }
    }

    fn file(&self) -> Zeroizing<String> {
        KeyFileWriter::new()
            .primary(
                &self.primary,
                KeyMetadata {
                    created_at: Some(datetime!(2026-11-01 0:00 UTC)),
                    expires_at: Some(datetime!(2027-05-01 0:00 UTC)),
                },
            )
            .decrypt_only(
                &self.previous,
                KeyMetadata {
                    created_at: Some(datetime!(2026-05-01 12:30:15 UTC)),
                    expires_at: None,
                },
            )
            .retired(&self.retired, KeyMetadata::default())
            .fernet(&self.fernet[0])
            .fernet(&self.fernet[1])
            .fernet_until(datetime!(2027-01-01 0:00 UTC))
            .render()
    }

    /// Every key's base64, as it would leak.
    fn secrets(&self) -> Vec<String> {
        let mut all: Vec<String> = [&self.primary, &self.previous, &self.retired]
            .iter()
            .map(|k| k.to_base64().to_string())
            .collect();
        for f in &self.fernet {
            all.push(f.to_base64().to_string());
        }
        all
    }
}

fn load(text: &str) -> Keyring {
    parse_key_file(text, KeyFileFormat::Toml, "escrow.toml".as_ref()).expect("a key file")
}

fn identity() -> (age::x25519::Identity, String) {
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    (identity, recipient)
}

fn identity_file(identity: &age::x25519::Identity) -> String {
    format!(
        "# created: 2026-11-30\n# public key: {}\n{}\n",
        identity.to_public(),
        identity.to_string().expose_secret()
    )
}

#[test]
fn round_trip_recovers_every_key_with_its_role_and_dates() {
    let keys = Keys::new();
    let file = keys.file();
    let original = load(&file);
    let (identity, recipient) = identity();

    let sealed = escrow::seal(&file, &[recipient.as_str()]).unwrap();
    assert!(sealed.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----"));
    let opened = escrow::open(&sealed, &identity_file(&identity)).unwrap();
    assert_eq!(*opened, *file);

    let recovered = load(&opened);
    assert_eq!(recovered.primary_key_id(), keys.primary.id());
    assert_eq!(recovered.decrypt_only_key_ids(), vec![keys.previous.id()]);
    assert_eq!(
        recovered.fernet_key_ids(),
        vec![keys.fernet[0].id(), keys.fernet[1].id()]
    );
    assert_eq!(recovered.fernet_until(), original.fernet_until());
    let now = datetime!(2026-12-01 0:00 UTC);
    let (a, b) = (original.status_at(now), recovered.status_at(now));
    assert_eq!(a.keys.len(), 4);
    for (a, b) in a.keys.iter().zip(&b.keys) {
        assert_eq!(
            (a.key_id, a.role, a.created_at, a.expires_at),
            (b.key_id, b.role, b.created_at, b.expires_at)
        );
    }
    // The recovered keys read what the originals wrote.
    let token = original.encrypt(b"account token", b"t.c").unwrap();
    assert_eq!(
        &*recovered.decrypt(&token, b"t.c").unwrap(),
        b"account token"
    );
    let legacy = original.encrypt_fernet(b"legacy").unwrap();
    assert_eq!(&*recovered.decrypt(&legacy, b"").unwrap(), b"legacy");
}

#[test]
fn each_of_two_recipients_can_open_it() {
    let file = Keys::new().file();
    let (alice, alice_public) = identity();
    let (bob, bob_public) = identity();
    let sealed = escrow::seal(&file, &[alice_public.as_str(), bob_public.as_str()]).unwrap();
    for identity in [&alice, &bob] {
        let opened = escrow::open(&sealed, &identity_file(identity)).unwrap();
        assert_eq!(*opened, *file);
    }
}

#[test]
fn a_wrong_identity_is_refused() {
    let file = Keys::new().file();
    let (_, recipient) = identity();
    let (stranger, _) = identity();
    let sealed = escrow::seal(&file, &[recipient.as_str()]).unwrap();
    let err = escrow::open(&sealed, &identity_file(&stranger)).unwrap_err();
    assert!(matches!(err, EscrowError::WrongIdentity), "{err:?}");
    assert!(err.to_string().contains("wrong identity"), "{err}");
}

#[test]
fn bad_inputs_are_named_without_showing_them() {
    let keys = Keys::new();
    let file = keys.file();
    let (identity, recipient) = identity();
    let secret_identity = identity.to_string().expose_secret().to_owned();

    let mut errors = vec![
        escrow::seal(&file, &[]).unwrap_err(),
        escrow::seal(&file, &[recipient.as_str(), "age1nonsense"]).unwrap_err(),
        // An identity given where a recipient belongs.
        escrow::seal(&file, &[secret_identity.as_str()]).unwrap_err(),
        // Not a key file: a key alone, or a key file with a key in a wrong field.
        escrow::seal(&keys.primary.to_base64(), &[recipient.as_str()]).unwrap_err(),
        escrow::seal(
            &format!(
                "[[keys]]\nkey = 42\nid = \"{}\"\n",
                keys.primary.to_base64().as_str()
            ),
            &[recipient.as_str()],
        )
        .unwrap_err(),
    ];
    assert!(matches!(errors[0], EscrowError::NoRecipients));
    assert!(matches!(
        errors[1],
        EscrowError::InvalidRecipient { index: 2 }
    ));
    assert!(matches!(errors[3], EscrowError::KeyFile(_)));

    let sealed = escrow::seal(&file, &[recipient.as_str()]).unwrap();
    // A recipient (public key) given as the identity; a key file as identity.
    errors.push(escrow::open(&sealed, &recipient).unwrap_err());
    errors.push(escrow::open(&sealed, &file).unwrap_err());
    errors.push(escrow::open(&sealed, "# nothing\n").unwrap_err());
    errors.push(escrow::open(file.as_bytes(), &identity_file(&identity)).unwrap_err());
    // Damaged: one character of the armored body changed.
    let mut damaged = sealed.clone();
    let at = damaged.len() / 2;
    damaged[at] = if damaged[at] == b'A' { b'B' } else { b'A' };
    errors.push(escrow::open(&damaged, &identity_file(&identity)).unwrap_err());
    assert!(matches!(
        errors[5],
        EscrowError::InvalidIdentity { line: 1 }
    ));
    assert!(
        matches!(errors[8], EscrowError::NotAnEscrowFile),
        "{:?}",
        errors[8]
    );

    let mut secrets = keys.secrets();
    secrets.push(secret_identity);
    for err in &errors {
        let shown = format!("{err} {err:?}");
        for secret in &secrets {
            assert!(!shown.contains(secret.as_str()), "a secret in {shown}");
        }
    }
}

#[test]
fn nothing_secret_in_the_sealed_file_or_debug_output() {
    let keys = Keys::new();
    let writer = KeyFileWriter::new()
        .primary(&keys.primary, KeyMetadata::default())
        .fernet(&keys.fernet[0]);
    let (_, recipient) = identity();
    let sealed = escrow::seal(&writer.render(), &[recipient.as_str()]).unwrap();
    let sealed = String::from_utf8(sealed).unwrap();
    let debug = format!("{writer:?}");
    assert!(debug.contains(&keys.primary.id().to_string()), "{debug}");
    for secret in keys.secrets() {
        assert!(!sealed.contains(&secret));
        assert!(!debug.contains(&secret), "{debug}");
    }
}
