"""Drives the citysense SensorThings endpoint with FROST-Server's own Python
client (PyPI frost-sta-client): lists Things, Datastreams and Observations,
follows links, filters on phenomenonTime and result, pages with nextLink.
Prints what it read as one JSON object for the Rust test to check.

usage: frost_client.py SERVICE_URL DATASTREAM_ID FROM_ISO
"""
import json
import sys

from frost_sta_client.service.sensorthingsservice import SensorThingsService

url, datastream_id, since = sys.argv[1:4]
service = SensorThingsService(url)
out = {}
# Whole sets, every page (the client follows @iot.nextLink while iterating).
out["things"] = sorted(t.id for t in service.things().query().top(1).list())
out["datastreams"] = sorted(d.id for d in service.datastreams().query().top(2).list())
# Links: a Thing's Datastreams, a Datastream's Thing, ObservedProperty and Observations.
thing = service.things().find(out["things"][0])
out["thing_name"] = thing.name
out["thing_datastreams"] = sorted(d.id for d in thing.get_datastreams().query().list())
ds = service.datastreams().find(datastream_id)
out["datastream_unit"] = ds.unit_of_measurement.symbol if ds.unit_of_measurement else None
observations = ds.get_observations().query().top(25).orderby("phenomenonTime", "ASC").list()
out["observations"] = [[o.phenomenon_time_as_str(), o.result] for o in observations]
# $filter on phenomenonTime and result, paged.
filtered = (
    service.observations()
    .query()
    .filter(f"phenomenonTime ge {since} and result gt 30 and Datastream/id eq '{datastream_id}'")
    .orderby("phenomenonTime", "ASC")
    .top(7)
    .list()
)
out["filtered"] = [[o.phenomenon_time_as_str(), o.result] for o in filtered]
out["count"] = service.observations().query().filter(f"Datastream/id eq '{datastream_id}'").count().top(1).list().count
print(json.dumps(out))
