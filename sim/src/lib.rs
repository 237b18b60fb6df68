//! `lydlr-sim`: the simulated robot swarm that produces lydlr's sensor-motor streams.
//!
//! Owns the arena and the robots (Rapier rigid bodies stepped from Bevy systems), the motor
//! and traction model, the behaviours that generate motor commands, and the sensor models
//! (IMU with noise density, bias random walk, ADC quantisation and clipping; wheel encoders;
//! motor command and current). One Bevy plugin per concern; headless; one `App::update` is one
//! physics step, so the swarm runs as fast as the CPU allows and is deterministic per seed.
//!
//! Must not: publish on the bus, compress, or write files. It hands out frames and poses;
//! callers decide where they go.

mod battery;
mod behaviour;
mod config;
mod lidar;
mod robots;
mod sensors;
mod world;

use bevy::app::App;
use bevy::ecs::world::World;

pub use config::{
    ArenaConfig, BehaviourConfig, BehaviourKind, ConfigError, ImuConfig, LidarConfig,
    ObstacleShape, PlacedObstacle, RateConfig, RobotConfig, RobotKind, SensorsConfig, SimConfig,
};
use lydlr_codec::{Frame, StreamSchema};
pub use sensors::{StreamId, enabled_streams, schema, stream_schemas};

/// A frame from one robot's sensor.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorFrame {
    pub robot: usize,
    pub stream: StreamId,
    pub frame: Frame,
}

/// Ground-truth planar pose of one robot (kept for evaluation, never compressed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pose2 {
    pub x: f32,
    /// The arena's second horizontal axis (Rapier's z).
    pub y: f32,
    pub yaw: f32,
}

/// The swarm: a headless Bevy app around a Rapier world.
///
/// Only the app's `World` is kept (it holds the schedules too): the `App` itself is not
/// `Send`, and the swarm is stepped from a worker thread.
pub struct Swarm {
    world: World,
    config: SimConfig,
}

impl Swarm {
    pub fn new(config: &SimConfig) -> Result<Swarm, ConfigError> {
        config.validate()?;
        let mut app = App::new();
        app.add_plugins((
            world::WorldPlugin::new(config),
            robots::RobotPlugin::new(config),
            behaviour::BehaviourPlugin::new(&config.behaviour),
            sensors::SensorPlugin::new(config),
        ));
        // Run the startup schedule now, so robots exist before the first step.
        app.finish();
        app.cleanup();
        let room = app.world().resource::<world::Arena>().spawn_points.len();
        if room < config.robots.count {
            return Err(ConfigError {
                field: "robots.count".into(),
                reason: format!(
                    "the arena has room for {room} robots clear of obstacles, not {}",
                    config.robots.count
                ),
            });
        }
        let mut world = std::mem::take(app.world_mut());
        world.run_schedule(bevy::app::Startup);
        Ok(Swarm {
            world,
            config: config.clone(),
        })
    }

    /// Half the arena's inner size along x and y, metres.
    pub fn arena_half_extents(&self) -> [f32; 2] {
        let arena = self.world.resource::<world::Arena>();
        [arena.half_x, arena.half_y]
    }

    /// Node names of the robots, `robot-00`, `robot-01`, ...
    pub fn robot_names(&self) -> Vec<String> {
        (0..self.config.robots.count).map(robot_name).collect()
    }

    /// The streams each robot produces, in a fixed order.
    pub fn streams(&self) -> Vec<StreamId> {
        enabled_streams(&self.config)
    }

    /// The schemas of [`Swarm::streams`], in the same order.
    pub fn schemas(&self) -> Vec<StreamSchema> {
        stream_schemas(&self.config)
    }

    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Advances the world by one physics step.
    pub fn step(&mut self) {
        self.world.run_schedule(bevy::app::Update);
    }

    /// Simulation time of the last completed step.
    pub fn time_ns(&self) -> i64 {
        self.world.resource::<world::SimClock>().time_ns()
    }

    /// Number of physics steps `duration_s` takes.
    pub fn total_steps(&self) -> u64 {
        self.config.total_steps()
    }

    /// Frames produced since the last call, in production order.
    pub fn drain_frames(&mut self) -> Vec<SensorFrame> {
        std::mem::take(&mut self.world.resource_mut::<sensors::Outbox>().frames)
    }

    /// Ground-truth poses, indexed by robot.
    pub fn poses(&mut self) -> Vec<Pose2> {
        robots::poses(&mut self.world)
    }
}

pub fn robot_name(index: usize) -> String {
    format!("robot-{index:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short_config(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            duration_s: 4.0,
            ..SimConfig::default()
        }
    }

    fn run(config: &SimConfig) -> (Vec<SensorFrame>, Vec<Pose2>) {
        let mut swarm = Swarm::new(config).unwrap();
        let mut frames = Vec::new();
        for _ in 0..swarm.total_steps() {
            swarm.step();
            frames.extend(swarm.drain_frames());
        }
        (frames, swarm.poses())
    }

    #[test]
    fn every_behaviour_moves_the_robots_without_leaving_the_arena() {
        for kind in [
            BehaviourKind::Wander,
            BehaviourKind::Flock,
            BehaviourKind::Formation,
            BehaviourKind::Goal,
        ] {
            let mut config = short_config(5);
            config.robots.count = 8;
            config.duration_s = 6.0;
            config.behaviour.kind = kind;
            let start = Swarm::new(&config).unwrap().poses();
            let (_, end) = run(&config);
            let travelled: f32 = start
                .iter()
                .zip(&end)
                .map(|(a, b)| (a.x - b.x).hypot(a.y - b.y))
                .sum();
            assert!(
                travelled / 8.0 > 0.8,
                "{kind:?}: mean travel {}",
                travelled / 8.0
            );
            let half = config.arena.size_m.map(|s| s as f32 / 2.0);
            assert!(
                end.iter()
                    .all(|p| p.x.abs() < half[0] && p.y.abs() < half[1]),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn lidar_sees_the_walls_and_reports_dropouts_as_zero() {
        let mut config = short_config(9);
        config.duration_s = 1.0;
        config.sensors.lidar = Some(LidarConfig {
            dropout: 0.05,
            ..LidarConfig::default()
        });
        let (frames, _) = run(&config);
        let scans: Vec<&SensorFrame> = frames
            .iter()
            .filter(|f| f.stream == StreamId::Lidar)
            .collect();
        assert_eq!(scans.len(), 10 * config.robots.count);
        let values: Vec<f64> = scans
            .iter()
            .flat_map(|s| s.frame.values.iter().copied())
            .collect();
        assert!(values.iter().all(|r| *r == 0.0 || (0.0..=8.0).contains(r)));
        let zeros = values.iter().filter(|r| **r == 0.0).count() as f64 / values.len() as f64;
        // A 12 m arena: every beam within 8 m of a wall or obstacle hits, so zeros are
        // dropouts plus the few beams along the long diagonals.
        assert!((0.03..0.3).contains(&zeros), "no-return fraction {zeros}");
    }

    #[test]
    fn collisions_show_in_the_accelerometer() {
        // A crowded pen: robots bump into each other and into the walls.
        let mut config = short_config(2);
        config.robots.count = 12;
        config.robots.cruise_speed_m_s = 1.2;
        config.duration_s = 10.0;
        config.arena.obstacles = 0;
        config.arena.size_m = [5.0, 5.0];
        let (frames, _) = run(&config);
        let peak = frames
            .iter()
            .filter(|f| f.stream == StreamId::Imu)
            .map(|f| f.frame.values[0].hypot(f.frame.values[1]))
            .fold(0.0, f64::max);
        // Motors alone cannot exceed the traction limit (mu g = 7.8 m/s^2); only impacts do.
        let traction_limit = config.robots.traction_mu * 9.81;
        assert!(
            peak > 1.5 * traction_limit,
            "peak horizontal acceleration {peak} m/s^2"
        );
    }

    #[test]
    fn same_seed_gives_identical_streams() {
        let (a, pa) = run(&short_config(11));
        let (b, pb) = run(&short_config(11));
        assert_eq!(a.len(), b.len());
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.robot == y.robot
                && x.stream == y.stream
                && x.frame.bit_eq(&y.frame))
        );
        assert_eq!(pa, pb);
        let (c, _) = run(&short_config(12));
        assert!(a.iter().zip(&c).any(|(x, y)| !x.frame.bit_eq(&y.frame)));
    }

    #[test]
    fn streams_have_their_rates_and_physical_values() {
        let config = short_config(3);
        let (frames, poses) = run(&config);
        let robots = config.robots.count;
        let count = |s: StreamId| frames.iter().filter(|f| f.stream == s).count();
        let secs = config.duration_s;
        let expect = |hz: f64| (hz * secs).round() as usize * robots;
        assert_eq!(count(StreamId::Imu), expect(config.sensors.imu.rate_hz));
        assert_eq!(
            count(StreamId::Wheels),
            expect(config.sensors.wheels.rate_hz)
        );
        assert_eq!(
            count(StreamId::Motors),
            expect(config.sensors.motors.rate_hz)
        );

        // At rest or cruising, the accelerometer's up axis reads gravity on average.
        let az: Vec<f64> = frames
            .iter()
            .filter(|f| f.stream == StreamId::Imu)
            .map(|f| f.frame.values[2])
            .collect();
        let mean = az.iter().sum::<f64>() / az.len() as f64;
        assert!((mean - 9.81).abs() < 0.3, "mean az {mean}");

        // Robots moved, and the wheel encoders counted it.
        let start = Swarm::new(&config).unwrap().poses();
        let moved = start
            .iter()
            .zip(&poses)
            .filter(|(a, b)| (a.x - b.x).hypot(a.y - b.y) > 0.3)
            .count();
        assert!(moved >= robots - 1, "only {moved} robots moved");
        let last_ticks = frames
            .iter()
            .rev()
            .find(|f| f.stream == StreamId::Wheels)
            .unwrap();
        assert!(last_ticks.frame.values.iter().all(|t| t.abs() > 100.0));
    }
}
