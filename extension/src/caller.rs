//! Who called a SECURITY DEFINER function. Inside one, `current_user` is
//! its owner and `session_user` the login role, so the role that really
//! called it (after `SET ROLE`, or from another definer function, or as
//! PostgREST's web role) is lost. Its default arguments, however, are
//! evaluated by the caller: such a function declares
//! `caller text DEFAULT integration._caller()` and reads the role with
//! `integration._verified_caller(caller)`. The token is the role name with
//! an HMAC under a random key of this backend, so a caller can present its
//! own identity and no other.

use crate::errors::raise;
use crate::owner::current_user_name;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use pgrx::prelude::*;
use sha2::Sha256;
use std::sync::OnceLock;

fn key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(rand::random)
}

fn tag(name: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key()).expect("HMAC takes any key length");
    mac.update(name.as_bytes());
    mac
}

/// A token naming the current role, for the `caller` argument of the
/// extension's SECURITY DEFINER functions.
#[pg_extern(volatile, parallel_restricted)]
fn _caller() -> String {
    let name = current_user_name();
    let mac = URL_SAFE_NO_PAD.encode(tag(&name).finalize().into_bytes());
    format!("{mac}:{name}")
}

/// The role a `_caller()` token names; refuses anything else.
#[pg_extern(volatile, parallel_restricted)]
fn _verified_caller(token: &str) -> String {
    let refused = || -> ! {
        raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            "the caller argument must be left to its default",
            None,
        )
    };
    let Some((mac, name)) = token.split_once(':') else {
        refused()
    };
    let Ok(mac) = URL_SAFE_NO_PAD.decode(mac) else {
        refused()
    };
    if tag(name).verify_slice(&mac).is_err() {
        refused()
    }
    name.to_string()
}
