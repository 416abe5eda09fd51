//! Guest-side marshalling generated from the signature list: one forwarder per function the
//! classifier accepts (see `shim-macros/src/classify.rs`). The host's dispatch is generated from
//! the same list by the same macro, so ids and encodings agree by construction.

use cuda_headers::CuResult;
use protocol::{CallId, Decoder, Encoder, RequestHeader};

use crate::channel::with_channel;

/// Sends one call: `encode` writes the arguments after the header, `decode` reads what comes
/// back. The host's result code becomes the `Err`.
///
/// # Errors
/// The host's result, or the channel's failure (see [`crate::channel::ThreadChannel::exchange`]).
pub fn call(
    id: u32,
    encode: impl FnOnce(&mut Encoder<'_>),
    decode: impl FnOnce(&mut Decoder<'_>) -> CuResult,
) -> CuResult {
    call_with(id, encode, decode)
}

/// Sends one call whose response carries a value: `decode` reads it (see
/// [`crate::channel::ThreadChannel::exchange`] for when it runs).
///
/// While DEVICEMAP memory is mirrored (TCP, [`crate::mirror`]), the guest's changes to it are
/// pushed first, and a synchronising call that succeeds pulls the device's changes after.
///
/// # Errors
/// The host's result, or the channel's failure.
pub fn call_with<R>(
    id: u32,
    encode: impl FnOnce(&mut Encoder<'_>),
    decode: impl FnOnce(&mut Decoder<'_>) -> CuResult<R>,
) -> CuResult<R> {
    crate::mirror::before_request(id)?;
    let result = with_channel(|channel| {
        channel.exchange(
            |buf| encode(&mut RequestHeader::start(buf, CallId(id), 0)),
            decode,
        )
    });
    if result.is_ok() {
        crate::mirror::after_request(id);
    }
    result
}

/// Posts one call whose only output is its result (see [`crate::posted`]): `encode` writes the
/// arguments after the header, everything the host needs copied now. With posting off
/// (`VGPU_ASYNC=0`) it is an ordinary [`call`].
///
/// # Errors
/// [`crate::channel::HOST_GONE`] when the host is gone; with posting off, as [`call`].
pub fn post(id: u32, encode: impl FnOnce(&mut Encoder<'_>)) -> CuResult {
    debug_assert_ne!(
        crate::posted::policy(id),
        crate::posted::NEVER,
        "call {id} is posted, but the call table says it never is (the host would refuse it)"
    );
    if !crate::posted::enabled() {
        return call_with(id, encode, |_| Ok(()));
    }
    crate::mirror::before_request(id)?;
    with_channel(|channel| {
        channel.post(|buf| encode(&mut RequestHeader::start(buf, CallId(id), 0)))
    })
}

/// Maps a truncated or malformed response to `CUDA_ERROR_UNKNOWN`.
pub fn bad_response(e: protocol::DecodeError) -> cuda_headers::CuError {
    crate::log::log!(
        crate::log::Level::Error,
        "malformed response from the host: {e}"
    );
    cuda_headers::CuError::UNKNOWN
}

/// Writes one parameter into the request.
macro_rules! put_param {
    ($enc:ident, $p:ident, value) => {
        // SAFETY: the classifier only passes plain data (integers, newtype enums, handles and
        // structs of them) by value.
        unsafe { $enc.put_raw(&$p) }
    };
    ($enc:ident, $p:ident, inout $inner:ty) => {
        // SAFETY: the caller's pointer is NULL or points to one `$inner` (driver API contract);
        // `$inner` is plain data.
        unsafe { $enc.put_opt_raw::<$inner>($p.cast_const().as_ref()) }
    };
    ($enc:ident, $p:ident, input $inner:ty) => {
        // SAFETY: as for `inout`.
        unsafe { $enc.put_opt_raw::<$inner>($p.as_ref()) }
    };
}

/// Copies one parameter back from the response.
macro_rules! take_param {
    ($dec:ident, $p:ident, value) => {};
    ($dec:ident, $p:ident, input $inner:ty) => {};
    ($dec:ident, $p:ident, inout $inner:ty) => {
        if !$p.is_null() {
            // SAFETY: the host sends back one plain `$inner` for every non-NULL pointer, and
            // the caller's pointer is valid for writes of one `$inner`.
            unsafe {
                let value: $inner = $dec.get_raw().map_err(|_| cuda_headers::CuError::UNKNOWN)?;
                $p.write(value);
            }
        }
    };
}

/// Whether a parameter is written back by the host (an output): only `inout` ones.
macro_rules! is_output {
    (value) => {
        false
    };
    (input $inner:ty) => {
        false
    };
    (inout $inner:ty) => {
        true
    };
}

/// The template `shim_macros::cuda_forwarders!` fills: one `unsafe fn` per function. A function
/// without outputs that [`crate::posted::forwarder_may_post`] allows is posted.
macro_rules! forwarders {
    ($({ name: $name:ident, id: $id:expr, params: ($($p:ident: $t:ty),*),
         marshal: [$(($mp:ident: $mt:ty => $($kind:tt)+)),*], gate: $gate:tt })*) => {
        $(
            #[doc = concat!("Forwards `", stringify!($name), "` to the host.")]
            ///
            /// # Safety
            /// The caller upholds the driver API's contract for the pointers it passes.
            ///
            /// # Errors
            /// The host's result code, or the channel's failure.
            #[allow(non_snake_case, clippy::too_many_arguments, unused_variables)]
            pub unsafe fn $name($($p: $t),*) -> cuda_headers::CuResult {
                let outputs = false $( || $crate::forward::is_output!($($kind)+) )*;
                if !outputs && $crate::posted::forwarder_may_post($id) {
                    return $crate::forward::post($id, |enc| {
                        $( $crate::forward::put_param!(enc, $mp, $($kind)+); )*
                    });
                }
                $crate::forward::call(
                    $id,
                    |enc| { $( $crate::forward::put_param!(enc, $mp, $($kind)+); )* },
                    |dec| {
                        $( $crate::forward::take_param!(dec, $mp, $($kind)+); )*
                        Ok(())
                    },
                )
            }
        )*
    };
}
pub(crate) use {forwarders, is_output, put_param, take_param};

/// One forwarder per generated function, named like the export.
pub mod generated {
    #![allow(unused_imports)]
    use cuda_headers::supplement::*;
    use cuda_headers::*;

    shim_macros::cuda_forwarders!(super::forwarders);
}
