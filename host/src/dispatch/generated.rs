//! Host-side dispatch of every function with generated marshalling: decode the arguments the
//! guest's generated forwarder encoded, call the real driver, send the out-values back.

#![allow(
    non_snake_case,
    unused_imports,
    unused_mut,
    unused_variables,
    unused_assignments,
    clippy::too_many_arguments
)]

use cuda_headers::supplement::*;
use cuda_headers::*;
use protocol::{DecodeError, Decoder, ResponseHeader};

/// Reads one parameter from the request into a local of the same name.
macro_rules! get_param {
    ($dec:ident, $p:ident: $t:ty, value) => {
        // SAFETY: the classifier only passes plain data by value: any bit pattern is a valid
        // `$t` (the driver validates handles and enums itself).
        let $p: $t = unsafe { $dec.get_raw()? };
    };
    ($dec:ident, $p:ident: $t:ty, inout $inner:ty) => {
        // SAFETY: `$inner` is plain data.
        let mut $p: Option<$inner> = unsafe { $dec.get_opt_raw()? };
    };
    ($dec:ident, $p:ident: $t:ty, input $inner:ty) => {
        // SAFETY: `$inner` is plain data.
        let $p: Option<$inner> = unsafe { $dec.get_opt_raw()? };
    };
}

/// The argument handed to the real function.
macro_rules! arg {
    ($p:ident, value) => {
        $p
    };
    ($p:ident, inout $inner:ty) => {
        $p.as_mut()
            .map_or(std::ptr::null_mut(), |v| v as *mut $inner)
    };
    ($p:ident, input $inner:ty) => {
        $p.as_ref().map_or(std::ptr::null(), |v| v as *const $inner)
    };
}

/// Writes one out-value into the response.
macro_rules! put_back {
    ($enc:ident, $p:ident, value) => {};
    ($enc:ident, $p:ident, input $inner:ty) => {};
    ($enc:ident, $p:ident, inout $inner:ty) => {
        if let Some(v) = &$p {
            // SAFETY: `$inner` is plain data.
            unsafe { $enc.put_raw(v) }
        }
    };
}

/// The gate's check of one handle parameter before the call (see `gate.rs`): `admit` and
/// `retire` need a handle this client holds, noted in `$lineage` for the owners of what the call
/// mints; a `mint` out-value is cleared, so that only a value the driver wrote is recorded.
macro_rules! gate_before {
    ($handles:ident, $out:ident, $lineage:ident, $p:ident, mint $k:ident) => {
        if let Some(v) = $p.as_mut() {
            // SAFETY: gated handle types are pointers or integers (`CUmemGenericAllocationHandle`),
            // for which all-zero bits are NULL or 0.
            *v = unsafe { std::mem::zeroed() };
        }
    };
    ($handles:ident, $out:ident, $lineage:ident, $p:ident, $verb:ident $k:ident) => {
        match $handles.admit(super::gate::Kind::$k, $p as u64) {
            Ok(root) => $lineage.note(super::gate::Kind::$k, root),
            Err(refused) => {
                ResponseHeader::start($out, refused.0);
                return Ok(());
            }
        }
    };
}

/// The gate's bookkeeping of one handle parameter after a successful call.
macro_rules! gate_after {
    ($handles:ident, $lineage:ident, $p:ident, mint $k:ident) => {
        if let Some(v) = $p {
            $handles.mint(
                super::gate::Kind::$k,
                v as u64,
                $lineage.owner_for(super::gate::Kind::$k),
            );
        }
    };
    ($handles:ident, $lineage:ident, $p:ident, retire $k:ident) => {
        $handles.retire(super::gate::Kind::$k, $p as u64);
    };
    ($handles:ident, $lineage:ident, $p:ident, admit $k:ident) => {};
}

/// The template `shim_macros::cuda_forwarders!` fills: one function per entry, and
/// [`dispatch`] over all of them.
macro_rules! host_forwarders {
    ($({ name: $name:ident, id: $id:expr, params: ($($p:ident: $t:ty),*),
         marshal: [$(($mp:ident: $mt:ty => $($kind:tt)+)),*],
         gate: [$(($gp:ident => $gverb:ident $gkind:ident)),*] })*) => {
        $(
            fn $name(
                handles: &super::gate::Handles,
                dec: &mut Decoder<'_>,
                out: &mut Vec<u8>,
            ) -> Result<(), DecodeError> {
                $( get_param!(dec, $mp: $mt, $($kind)+); )*
                dec.finish()?;
                let mut lineage = super::gate::Lineage::default();
                $( gate_before!(handles, out, lineage, $gp, $gverb $gkind); )*
                let Some(real) = crate::driver::real::$name() else {
                    super::missing(stringify!($name), out);
                    return Ok(());
                };
                // SAFETY: every argument is a decoded plain value or a pointer to a local of
                // the type the driver expects, alive for the whole call; every gated handle was
                // admitted above.
                let result = unsafe { real($( arg!($mp, $($kind)+) ),*) };
                if result == CUresult::CUDA_SUCCESS {
                    $( gate_after!(handles, lineage, $gp, $gverb $gkind); )*
                }
                let mut enc = ResponseHeader::start(out, result.0);
                $( put_back!(enc, $mp, $($kind)+); )*
                Ok(())
            }
        )*

        /// Runs generated function `id`, or returns `None` when `id` has no generated
        /// marshalling.
        pub fn dispatch(
            id: u32,
            handles: &super::gate::Handles,
            dec: &mut Decoder<'_>,
            out: &mut Vec<u8>,
        ) -> Option<Result<(), DecodeError>> {
            match id {
                $( $id => Some($name(handles, dec, out)), )*
                _ => None,
            }
        }

        /// How many functions have generated marshalling.
        pub const COUNT: usize = [$(stringify!($name)),*].len();
    };
}

shim_macros::cuda_forwarders!(host_forwarders);
