//! Modbus: the register map and value decoding (pure, no I/O) apart from the
//! poller that talks to devices, as tokio-modbus keeps codec apart from transport.

mod address;
pub mod poller;
pub mod register_map;
pub mod value;

pub use address::{AddressError, ModbusAddress, Parity, Serial};
pub use register_map::{Decoded, Point, RegisterMap, Table};
pub use shared::modbus::{decode_registers, DataType, WordOrder};

/// The name of a Modbus exception, as a technician would look it up in a device manual.
pub fn exception_name(code: tokio_modbus::ExceptionCode) -> String {
    use tokio_modbus::ExceptionCode::*;
    let (n, name) = match code {
        IllegalFunction => (1, "illegal function"),
        IllegalDataAddress => (2, "illegal data address"),
        IllegalDataValue => (3, "illegal data value"),
        ServerDeviceFailure => (4, "server device failure"),
        Acknowledge => (5, "acknowledge"),
        ServerDeviceBusy => (6, "server device busy"),
        MemoryParityError => (8, "memory parity error"),
        GatewayPathUnavailable => (10, "gateway path unavailable"),
        GatewayTargetDevice => (11, "gateway target device failed to respond"),
        Custom(c) => (c, "non-standard exception"),
    };
    format!("Modbus exception {n} ({name})")
}
