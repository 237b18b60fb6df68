//! `lydlr bench`: speed figures printed as JSON lines (run with `--release`).

use std::time::Instant;

use lydlr_sim::{LidarConfig, SimConfig, Swarm};
use serde::Serialize;

/// One configuration of `lydlr bench sim`.
#[derive(Debug, Clone, Serialize)]
pub struct SimBench {
    pub robots: usize,
    pub lidar_beams: usize,
    pub imu_hz: f64,
    pub sim_seconds: f64,
    pub wall_seconds: f64,
    pub realtime_factor: f64,
    pub frames: u64,
}

/// A swarm of `robots` with room to move (about 4 m^2 each) and one obstacle per 5 robots.
pub fn bench_config(robots: usize, lidar_beams: usize, sim_seconds: f64) -> SimConfig {
    let mut config = SimConfig {
        seed: 42,
        duration_s: sim_seconds,
        ..SimConfig::default()
    };
    let side = (4.0 * robots as f64).sqrt().ceil() + 6.0;
    config.arena.size_m = [side, side];
    config.arena.obstacles = robots / 5;
    config.robots.count = robots;
    config.sensors.imu.rate_hz = 200.0;
    config.sensors.lidar = (lidar_beams > 0).then(|| LidarConfig {
        beams: lidar_beams,
        rate_hz: 10.0,
        ..LidarConfig::default()
    });
    config
}

/// Steps the swarm for its duration on the calling thread and times it (set-up excluded).
pub fn bench_sim(config: &SimConfig) -> anyhow::Result<SimBench> {
    let mut swarm = Swarm::new(config)?;
    let mut frames = 0u64;
    let started = Instant::now();
    for _ in 0..swarm.total_steps() {
        swarm.step();
        frames += swarm.drain_frames().len() as u64;
    }
    let wall = started.elapsed().as_secs_f64();
    Ok(SimBench {
        robots: config.robots.count,
        lidar_beams: config.sensors.lidar.as_ref().map_or(0, |l| l.beams),
        imu_hz: config.sensors.imu.rate_hz,
        sim_seconds: config.duration_s,
        wall_seconds: wall,
        realtime_factor: config.duration_s / wall,
        frames,
    })
}

/// The standard grid: 10, 100 and 1000 robots, with and without a 360-beam lidar.
pub fn sim_grid(scale: f64) -> Vec<SimConfig> {
    let mut out = Vec::new();
    for (robots, seconds) in [(10, 20.0), (100, 5.0), (1000, 2.0)] {
        for beams in [0, 360] {
            out.push(bench_config(robots, beams, seconds * scale));
        }
    }
    out
}
