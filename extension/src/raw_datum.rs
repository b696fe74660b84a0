//! Values kept as their detoasted bytes and returned as fresh copies, so a
//! cached `jsonb` or `text[]` costs one palloc and a memcpy per call instead
//! of a parse. Only for types passed by reference as varlena.

use pgrx::prelude::*;
use pgrx::IntoDatum;
use std::marker::PhantomData;
use std::rc::Rc;

/// A varlena SQL type that [`Raw`] may hold.
pub trait VarlenaType {
    const OID: pg_sys::Oid;
}

pub struct Jsonb;
impl VarlenaType for Jsonb {
    const OID: pg_sys::Oid = pg_sys::JSONBOID;
}

pub struct TextArray;
impl VarlenaType for TextArray {
    const OID: pg_sys::Oid = pg_sys::TEXTARRAYOID;
}

/// The bytes of one value of type `T`; cloning shares them.
pub struct Raw<T> {
    bytes: Rc<[u8]>,
    kind: PhantomData<T>,
}

impl<T> Clone for Raw<T> {
    fn clone(&self) -> Self {
        Raw {
            bytes: Rc::clone(&self.bytes),
            kind: PhantomData,
        }
    }
}

impl<T: VarlenaType> Raw<T> {
    /// Copies a non-null datum of type `T`, detoasting it first.
    ///
    /// # Safety
    /// `datum` must be a valid, non-null value of type `T`.
    pub unsafe fn copy_of(datum: pg_sys::Datum) -> Self {
        // SAFETY: the caller guarantees a valid varlena of type T.
        unsafe {
            let value = pg_sys::pg_detoast_datum_packed(datum.cast_mut_ptr());
            let len = pgrx::varlena::varsize_any(value);
            let bytes = std::slice::from_raw_parts(value.cast::<u8>(), len);
            Raw {
                bytes: Rc::from(bytes),
                kind: PhantomData,
            }
        }
    }
}

impl<T: VarlenaType> IntoDatum for Raw<T> {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        // SAFETY: a palloc'd copy of a complete varlena, in the current
        // memory context, as Postgres expects of a returned value.
        unsafe {
            let copy = pg_sys::palloc(self.bytes.len()).cast::<u8>();
            std::ptr::copy_nonoverlapping(self.bytes.as_ptr(), copy, self.bytes.len());
            Some(pg_sys::Datum::from(copy))
        }
    }

    fn type_oid() -> pg_sys::Oid {
        T::OID
    }
}
