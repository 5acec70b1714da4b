//! `GET /metrics`: Prometheus text exposition of ingest, store, sink, feeds,
//! alerts and gateways.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::ingest::Rejection;

fn counter(out: &mut String, name: &str, help: &str, v: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
}

pub async fn metrics(State(st): State<AppState>) -> Response {
    let c = &st.counters;
    let mut out = String::new();
    counter(&mut out, "citysense_batches_total", "Batches accepted from agents.", c.batches.load(Relaxed));
    counter(&mut out, "citysense_readings_received_total", "Readings received in accepted batches, duplicates included.", c.received.load(Relaxed));
    counter(&mut out, "citysense_readings_stored_total", "Readings stored for the first time.", c.stored.load(Relaxed));
    counter(&mut out, "citysense_readings_duplicate_total", "Readings received again and not stored twice.", c.duplicate.load(Relaxed));
    counter(&mut out, "citysense_store_commits_total", "Writes of stored readings made durable (one sync each, for every batch queued behind the last).", c.commits.load(Relaxed));
    counter(&mut out, "citysense_readings_dropped_at_agent_total", "Readings agents reported dropped before sending (buffer full).", c.skipped.load(Relaxed));
    counter(
        &mut out,
        "citysense_readings_sensor_not_owned_total",
        "Readings refused because their gateway does not own their sensor (acknowledged, not stored).",
        c.sensor_not_owned.load(Relaxed),
    );
    counter(
        &mut out,
        "citysense_readings_clock_skew_total",
        "Readings with an implausible time moved onto the collector's clock (their gateway's clock is off).",
        c.clock_skew.load(Relaxed),
    );
    counter(&mut out, "citysense_store_errors_total", "Store writes that failed (batches left unacknowledged).", c.store_errors.load(Relaxed));
    counter(&mut out, "citysense_rules_lagged_total", "Batches of stored readings the alert engine could not take in time.", c.rules_lagged.load(Relaxed));
    counter(&mut out, "citysense_rules_lagged_readings_total", "Readings in those batches: stored and fed, never evaluated by the rules.", c.rules_lagged_readings.load(Relaxed));
    counter(&mut out, "citysense_rules_readings_evaluated_total", "Readings the alert engine has evaluated.", st.alerting.evaluated.load(Relaxed));
    let _ = writeln!(out, "# HELP citysense_batches_rejected_total Batches rejected, by reason.\n# TYPE citysense_batches_rejected_total counter");
    let rejected = c.rejected.read().unwrap().clone();
    for reason in Rejection::ALL {
        let _ = writeln!(out, "citysense_batches_rejected_total{{reason=\"{}\"}} {}", reason.label(), rejected.get(&reason).copied().unwrap_or(0));
    }
    let _ = writeln!(out, "# HELP citysense_tls_handshakes_total TLS handshakes on the broker and HTTP listeners, by outcome.\n# TYPE citysense_tls_handshakes_total counter");
    let _ = writeln!(
        out,
        "citysense_tls_handshakes_total{{result=\"accepted\"}} {}\ncitysense_tls_handshakes_total{{result=\"refused\"}} {}",
        st.tls.accepted.load(Relaxed),
        st.tls.refused.load(Relaxed)
    );
    let _ = writeln!(out, "# HELP citysense_mqtt_refused_total MQTT connections the broker's front door closed, by reason.\n# TYPE citysense_mqtt_refused_total counter");
    for r in crate::mqtt::front::Refusal::ALL {
        let _ = writeln!(out, "citysense_mqtt_refused_total{{reason=\"{}\"}} {}", r.label(), st.mqtt_front.count(r));
    }
    let _ = writeln!(out, "# HELP citysense_http_refused_total HTTP requests and connections refused, by reason.\n# TYPE citysense_http_refused_total counter");
    for r in crate::http::gate::Refusal::ALL {
        // Connections refused at the TLS front are counted by the cap itself.
        let n = st.access.refusals.count(r) + if r == crate::http::gate::Refusal::ConnectionCap { st.conn_limit.refused.load(Relaxed) } else { 0 };
        let _ = writeln!(out, "citysense_http_refused_total{{reason=\"{}\"}} {n}", r.label());
    }
    let _ = writeln!(
        out,
        "# HELP citysense_feed_dropped_total What the live feeds dropped because a consumer was slow, by feed and unit (reading; batch: a batch of readings skipped whole; event: an SSE event). The store and the InfluxDB sink keep every reading.\n# TYPE citysense_feed_dropped_total counter"
    );
    for (feed, unit, n) in st.feed_stats.rows() {
        let _ = writeln!(out, "citysense_feed_dropped_total{{feed=\"{feed}\",unit=\"{unit}\"}} {n}");
    }
    counter(
        &mut out,
        "citysense_feed_over_rate_total",
        "Readings the MQTT live feed left out because it was at mqtt.live_rate (the store and the InfluxDB sink keep every reading).",
        st.feed_stats.mqtt_live_over_rate.load(Relaxed),
    );
    let hooks = &st.alerting.outbox;
    let _ = writeln!(
        out,
        "# HELP citysense_webhook_delivered_total Webhook deliveries answered 2xx.\n# TYPE citysense_webhook_delivered_total counter\ncitysense_webhook_delivered_total {}",
        hooks.delivered.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP citysense_webhook_failures_total Webhook attempts that failed (retried).\n# TYPE citysense_webhook_failures_total counter\ncitysense_webhook_failures_total {}",
        hooks.failures.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP citysense_speaker 1 while this collector publishes the feeds and delivers webhooks: always outside cluster mode, one collector of a cluster.\n# TYPE citysense_speaker gauge\ncitysense_speaker {}",
        u8::from(st.speaking.borrow().speaking)
    );
    if let Some(h) = &st.holdings {
        let held = h.held();
        let _ = writeln!(
            out,
            "# HELP citysense_cluster_partitions_held Partitions of the batch log this collector holds (reads, stores, evaluates and announces).\n# TYPE citysense_cluster_partitions_held gauge\ncitysense_cluster_partitions_held {}",
            held.len()
        );
        let _ = writeln!(out, "# HELP citysense_cluster_partition_held 1 for each partition of the batch log this collector holds.\n# TYPE citysense_cluster_partition_held gauge");
        for p in held {
            let _ = writeln!(out, "citysense_cluster_partition_held{{partition=\"{p}\"}} 1");
        }
    }
    if let Some(v) = &st.view {
        counter(
            &mut out,
            "citysense_cluster_view_unsent_total",
            "Changes to this collector's live view never shared with the cluster (the queue to it was full).",
            v.unsent.load(Relaxed),
        );
        counter(&mut out, "citysense_cluster_view_unreadable_total", "Changes to the live view from other collectors that could not be read.", v.unreadable.load(Relaxed));
    }
    let seen = st.speaking.borrow().from_ms;
    if (0..i64::MAX).contains(&seen) {
        let _ = writeln!(
            out,
            "# HELP citysense_speaker_seen_ms Cluster mode: the last renewal of another collector's speaker lease this one saw (ms since the epoch); what it withheld since, it announces should it take over.\n# TYPE citysense_speaker_seen_ms gauge\ncitysense_speaker_seen_ms {seen}"
        );
    }
    counter(&mut out, "citysense_webhook_withheld_total", "Webhook deliveries not sent because another collector of the cluster speaks for it.", hooks.withheld.load(Relaxed));
    let _ = writeln!(out, "# HELP citysense_webhook_backlog Webhook deliveries waiting.\n# TYPE citysense_webhook_backlog gauge\ncitysense_webhook_backlog {}", hooks.backlog());
    counter(&mut out, "citysense_store_expired_samples_total", "Raw samples deleted past their retention.", st.lifecycle.expired_samples.load(Relaxed));
    counter(
        &mut out,
        "citysense_store_upkeep_seconds_total",
        "Time spent bringing rollups up to date, packing closed hours and deleting expired data.",
        st.lifecycle.upkeep_us.load(Relaxed) as f64 / 1e6,
    );
    counter(&mut out, "citysense_store_upkeep_passes_total", "Upkeep passes run (every 10 s, or `expire_every` if shorter).", st.lifecycle.upkeep_passes.load(Relaxed));
    counter(&mut out, "citysense_store_expired_rollups_total", "Rollup buckets deleted past their retention.", st.lifecycle.expired_rollups.load(Relaxed));
    let _ = writeln!(
        out,
        "# HELP citysense_store_bytes Bytes the embedded store takes on disk.\n# TYPE citysense_store_bytes gauge\ncitysense_store_bytes {}",
        st.store.size_on_disk()
    );
    if let Some(sink) = &st.sink {
        counter(&mut out, "citysense_influx_points_written_total", "Points InfluxDB confirmed.", sink.written.load(Relaxed));
        counter(&mut out, "citysense_influx_points_rejected_total", "Points InfluxDB refused as invalid (logged, dropped).", sink.rejected.load(Relaxed));
        counter(&mut out, "citysense_influx_write_errors_total", "InfluxDB write requests that failed and are retried.", sink.errors.load(Relaxed));
        let _ = writeln!(
            out,
            "# HELP citysense_influx_backlog Readings stored and not yet confirmed by InfluxDB.\n# TYPE citysense_influx_backlog gauge\ncitysense_influx_backlog {}",
            st.store.forward_backlog()
        );
    }
    let _ = writeln!(out, "# HELP citysense_alerts Alerts by state (resolved: all kept in history).\n# TYPE citysense_alerts gauge");
    for state in [crate::rules::State::Firing, crate::rules::State::Acknowledged, crate::rules::State::Resolved] {
        let n = st.alerting.alerts(|a| a.state == state).len();
        let _ = writeln!(out, "citysense_alerts{{state=\"{}\"}} {n}", state.as_str());
    }
    let _ = writeln!(out, "# HELP citysense_gateway_lag_seconds Ingest time minus the newest reading's time at the last batch.\n# TYPE citysense_gateway_lag_seconds gauge");
    let gws = st.registry.gateways();
    for g in &gws {
        if let Some(lag) = g.lag_ms {
            let _ = writeln!(out, "citysense_gateway_lag_seconds{{gateway=\"{}\"}} {:.3}", g.id, lag as f64 / 1000.0);
        }
    }
    let _ = writeln!(out, "# HELP citysense_gateway_buffer_depth Readings buffered at the gateway, from its last health report.\n# TYPE citysense_gateway_buffer_depth gauge");
    for g in &gws {
        if let Some(h) = &g.health {
            let _ = writeln!(out, "citysense_gateway_buffer_depth{{gateway=\"{}\"}} {}", g.id, h.buffer_depth);
        }
    }
    let _ = writeln!(out, "# HELP citysense_gateway_online 1 when the gateway's last state was online.\n# TYPE citysense_gateway_online gauge");
    for g in &gws {
        let _ = writeln!(out, "citysense_gateway_online{{gateway=\"{}\"}} {}", g.id, u8::from(g.status == "online"));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
