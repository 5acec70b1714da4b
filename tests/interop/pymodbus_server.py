#!/usr/bin/env python3
"""An independent Modbus TCP peer for interop tests: pymodbus serving known
register images, so the agent's decoding is checked against another
implementation's idea of the wire.

usage: pymodbus_server.py PORT

Holding registers (0-based addresses):
  0-1   123.456 f32 ABCD      (0x42F6 0xE979)
  2-3   123.456 f32 CDAB
  4-5   123.456 f32 BADC
  6-7   123.456 f32 DCBA
  8     -123 i16
  10-11 305419896 u32 CDAB    (0x12345678)
  12-15 1.5 f64 ABCD
  20    215 u16 (21.5 with scale 0.1)
Input registers: 0 = 4242 u16, 1-2 = -2 i32 ABCD
Coils: 0 = on, 1 = off. Discrete inputs: 0 = on.
"""
import asyncio
import struct
import sys

from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext, ModbusSlaveContext
from pymodbus.server import StartAsyncTcpServer


def words(fmt, value):
    raw = struct.pack(">" + fmt, value)
    return [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]


def swap_bytes(ws):
    return [((w & 0xFF) << 8) | (w >> 8) for w in ws]


def main():
    port = int(sys.argv[1])
    f = words("f", 123.456)
    holding = [0] * 32
    holding[0:2] = f
    holding[2:4] = list(reversed(f))
    holding[4:6] = swap_bytes(f)
    holding[6:8] = swap_bytes(list(reversed(f)))
    holding[8] = words("h", -123)[0]
    holding[10:12] = list(reversed(words("I", 305419896)))
    holding[12:16] = words("d", 1.5)
    holding[20] = 215
    inputs = [0] * 8
    inputs[0] = 4242
    inputs[1:3] = words("i", -2)
    # pymodbus 3.6 data blocks are addressed from 1 for protocol address 0.
    slave = ModbusSlaveContext(
        hr=ModbusSequentialDataBlock(1, holding),
        ir=ModbusSequentialDataBlock(1, inputs),
        co=ModbusSequentialDataBlock(1, [1, 0] + [0] * 14),
        di=ModbusSequentialDataBlock(1, [1] + [0] * 15),
    )
    context = ModbusServerContext(slaves={1: slave}, single=False)
    asyncio.run(StartAsyncTcpServer(context=context, address=("127.0.0.1", port)))


if __name__ == "__main__":
    main()
