#!/usr/bin/env python3
"""An air-quality station as its datasheet describes it, served by pymodbus
(an implementation independent of citysense), for the commissioning test:
the technician writes the config from this table in Modicon numbers and
`citysense-agent test` must print the values the datasheet promises.

usage: pymodbus_datasheet.py PORT

  register      0-based        content
  40101-40102   holding 100    PM2.5, float32, low word first (CDAB): 35.7
  40103         holding 102    temperature, int16 x 0.1: -53 (-5.3 degC)
  40104         holding 103    humidity, uint16 x 0.1: 876 (87.6 %)
  40105         holding 104    status: bit 0 fault (1), bit 1 heater (0),
                               bits 4-7 mode (5): 0x0051
  30001-30002   input 0        counter, uint32, high word first: 123456789

Nothing is mapped beyond holding 119 or input 9: a read there is answered
with Modbus exception 2 (illegal data address).
"""
import asyncio
import struct
import sys

from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext, ModbusSlaveContext
from pymodbus.server import StartAsyncTcpServer


def words(fmt, value):
    raw = struct.pack(">" + fmt, value)
    return [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]


def main():
    port = int(sys.argv[1])
    holding = [0] * 120
    holding[100:102] = list(reversed(words("f", 35.7)))
    holding[102] = words("h", -53)[0]
    holding[103] = 876
    holding[104] = 0b0101_0001
    inputs = [0] * 10
    inputs[0:2] = words("I", 123456789)
    # pymodbus 3.6 data blocks are addressed from 1 for protocol address 0.
    slave = ModbusSlaveContext(
        hr=ModbusSequentialDataBlock(1, holding),
        ir=ModbusSequentialDataBlock(1, inputs),
        co=ModbusSequentialDataBlock(1, [0] * 8),
        di=ModbusSequentialDataBlock(1, [0] * 8),
    )
    context = ModbusServerContext(slaves={1: slave}, single=False)
    asyncio.run(StartAsyncTcpServer(context=context, address=("127.0.0.1", port)))


if __name__ == "__main__":
    main()
