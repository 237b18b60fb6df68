//! What a scenario's `[sim]` table says: arena, robots, sensors, duration and seed.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("sim.{field}: {reason}")]
pub struct ConfigError {
    pub field: String,
    pub reason: String,
}

fn invalid(field: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    pub seed: u64,
    pub duration_s: f64,
    pub arena: ArenaConfig,
    pub robots: RobotConfig,
    pub behaviour: BehaviourConfig,
    pub sensors: SensorsConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            duration_s: 30.0,
            arena: ArenaConfig::default(),
            robots: RobotConfig::default(),
            behaviour: BehaviourConfig::default(),
            sensors: SensorsConfig::default(),
        }
    }
}

/// A walled rectangle with obstacles: placed ones, plus a number of random ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArenaConfig {
    /// Inner size in metres along x and y.
    pub size_m: [f64; 2],
    pub walls: bool,
    pub wall_height_m: f64,
    /// Number of randomly placed obstacles.
    pub obstacles: usize,
    /// Random obstacle half-size (box) or radius (cylinder) range in metres.
    pub obstacle_size_m: [f64; 2],
    /// Obstacles at given places, in addition to the random ones.
    pub placed: Vec<PlacedObstacle>,
}

impl Default for ArenaConfig {
    fn default() -> Self {
        Self {
            size_m: [12.0, 12.0],
            walls: true,
            wall_height_m: 0.5,
            obstacles: 6,
            obstacle_size_m: [0.2, 0.6],
            placed: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObstacleShape {
    Box,
    Cylinder,
}

/// One obstacle at a fixed place (arena coordinates, centre at the origin).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacedObstacle {
    pub shape: ObstacleShape,
    pub x: f64,
    pub y: f64,
    /// Half-size (box) or radius (cylinder), metres.
    pub size_m: f64,
}

/// What drives the motor commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BehaviourKind {
    /// Meander, avoiding obstacles.
    Wander,
    /// Reynolds flocking: separation, alignment, cohesion.
    Flock,
    /// Squads follow their leader in a wedge.
    Formation,
    /// Drive to random goals, a new one on arrival.
    Goal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BehaviourConfig {
    pub kind: BehaviourKind,
    /// Flocking: neighbours within this radius count.
    pub neighbour_radius_m: f64,
    /// Flocking: closer than this, robots push apart.
    pub separation_m: f64,
    /// Formation: robots per squad (the first leads) and slot spacing.
    pub squad_size: usize,
    pub formation_spacing_m: f64,
    /// Goal seeking: arrival tolerance.
    pub goal_tolerance_m: f64,
}

impl Default for BehaviourConfig {
    fn default() -> Self {
        Self {
            kind: BehaviourKind::Wander,
            neighbour_radius_m: 2.5,
            separation_m: 0.9,
            squad_size: 4,
            formation_spacing_m: 0.9,
            goal_tolerance_m: 0.4,
        }
    }
}

/// Differential-drive ground robots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RobotKind {
    DiffDrive,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RobotConfig {
    pub kind: RobotKind,
    pub count: usize,
    pub mass_kg: f64,
    /// Body length, width, height in metres.
    pub body_m: [f64; 3],
    /// Distance between the wheels' contact points.
    pub wheel_base_m: f64,
    pub wheel_radius_m: f64,
    /// Motor speed limit at the wheel.
    pub max_wheel_speed_rad_s: f64,
    /// Motor acceleration limit at the wheel.
    pub max_wheel_accel_rad_s2: f64,
    /// Motor speed loop time constant.
    pub motor_time_constant_s: f64,
    /// Tyre-ground friction coefficient (traction limit).
    pub traction_mu: f64,
    pub cruise_speed_m_s: f64,
}

impl Default for RobotConfig {
    fn default() -> Self {
        Self {
            kind: RobotKind::DiffDrive,
            count: 4,
            mass_kg: 4.0,
            body_m: [0.4, 0.3, 0.15],
            wheel_base_m: 0.32,
            wheel_radius_m: 0.05,
            max_wheel_speed_rad_s: 20.0,
            max_wheel_accel_rad_s2: 60.0,
            motor_time_constant_s: 0.08,
            traction_mu: 0.8,
            cruise_speed_m_s: 0.6,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SensorsConfig {
    /// The IMU rate is also the physics rate.
    pub imu: ImuConfig,
    pub wheels: RateConfig,
    /// Motor commands and currents; also the behaviours' control rate.
    pub motors: RateConfig,
    /// Pack voltage and current.
    pub battery: RateConfig,
    /// Ground-truth pose (for evaluation; never compressed).
    pub pose: RateConfig,
    /// A 2D scanning lidar, when present.
    pub lidar: Option<LidarConfig>,
    /// Wheel encoder resolution.
    pub encoder_ticks_per_rev: u32,
}

impl Default for SensorsConfig {
    fn default() -> Self {
        Self {
            imu: ImuConfig::default(),
            wheels: RateConfig { rate_hz: 50.0 },
            motors: RateConfig { rate_hz: 50.0 },
            battery: RateConfig { rate_hz: 10.0 },
            pose: RateConfig { rate_hz: 50.0 },
            lidar: None,
            encoder_ticks_per_rev: 2048,
        }
    }
}

/// A 2D lidar in the plane of the robot body (RPLidar-like defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LidarConfig {
    pub rate_hz: f64,
    pub beams: usize,
    pub max_range_m: f64,
    /// Range noise standard deviation.
    pub range_noise_m: f64,
    /// Probability that a beam returns nothing although it hit (reported as 0).
    pub dropout: f64,
}

impl Default for LidarConfig {
    fn default() -> Self {
        Self {
            rate_hz: 10.0,
            beams: 360,
            max_range_m: 8.0,
            range_noise_m: 0.01,
            dropout: 0.01,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    pub rate_hz: f64,
}

/// Datasheet figures of a MEMS IMU (defaults are Bosch BMI088-like).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImuConfig {
    pub rate_hz: f64,
    /// Accelerometer noise density, micro-g per sqrt(Hz).
    pub accel_noise_ug_per_sqrt_hz: f64,
    /// Gyroscope noise density, degrees per second per sqrt(Hz).
    pub gyro_noise_dps_per_sqrt_hz: f64,
    /// Bias random walk, m/s^2 per sqrt(s) and rad/s per sqrt(s).
    pub accel_bias_walk: f64,
    pub gyro_bias_walk: f64,
    /// Full-scale ranges: +-g and +-degrees per second, over a 16-bit ADC.
    pub accel_range_g: f64,
    pub gyro_range_dps: f64,
    /// Chassis vibration from the drive train, m/s^2 per m/s of speed.
    pub vibration_m_s2_per_m_s: f64,
}

impl Default for ImuConfig {
    fn default() -> Self {
        Self {
            rate_hz: 200.0,
            accel_noise_ug_per_sqrt_hz: 160.0,
            gyro_noise_dps_per_sqrt_hz: 0.014,
            accel_bias_walk: 4e-4,
            gyro_bias_walk: 4e-5,
            accel_range_g: 6.0,
            gyro_range_dps: 500.0,
            vibration_m_s2_per_m_s: 0.15,
        }
    }
}

impl SimConfig {
    pub fn physics_hz(&self) -> f64 {
        self.sensors.imu.rate_hz
    }

    pub fn step_ns(&self) -> i64 {
        (1e9 / self.physics_hz()).round() as i64
    }

    pub fn total_steps(&self) -> u64 {
        (self.duration_s * self.physics_hz()).round() as u64
    }

    /// Physics steps between two samples of a stream at `rate_hz`.
    pub(crate) fn decimation(&self, rate_hz: f64) -> u64 {
        (self.physics_hz() / rate_hz).round() as u64
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = |field: &str, value: f64| {
            if value.is_finite() && value > 0.0 {
                Ok(())
            } else {
                Err(invalid(
                    field,
                    format!("must be a positive number, got {value}"),
                ))
            }
        };
        positive("duration_s", self.duration_s)?;
        positive("arena.size_m[0]", self.arena.size_m[0])?;
        positive("arena.size_m[1]", self.arena.size_m[1])?;
        positive("arena.wall_height_m", self.arena.wall_height_m)?;
        positive("arena.obstacle_size_m[0]", self.arena.obstacle_size_m[0])?;
        if self.arena.obstacle_size_m[1] < self.arena.obstacle_size_m[0] {
            return Err(invalid(
                "arena.obstacle_size_m",
                "must be [min, max] with min <= max",
            ));
        }
        let r = &self.robots;
        if r.count == 0 || r.count > 10_000 {
            return Err(invalid(
                "robots.count",
                format!("must be 1 to 10000, got {}", r.count),
            ));
        }
        positive("robots.mass_kg", r.mass_kg)?;
        for (i, v) in r.body_m.iter().enumerate() {
            positive(&format!("robots.body_m[{i}]"), *v)?;
        }
        positive("robots.wheel_base_m", r.wheel_base_m)?;
        positive("robots.wheel_radius_m", r.wheel_radius_m)?;
        positive("robots.max_wheel_speed_rad_s", r.max_wheel_speed_rad_s)?;
        positive("robots.max_wheel_accel_rad_s2", r.max_wheel_accel_rad_s2)?;
        positive("robots.motor_time_constant_s", r.motor_time_constant_s)?;
        positive("robots.traction_mu", r.traction_mu)?;
        positive("robots.cruise_speed_m_s", r.cruise_speed_m_s)?;
        let imu = &self.sensors.imu;
        positive("sensors.imu.rate_hz", imu.rate_hz)?;
        if !(50.0..=2000.0).contains(&imu.rate_hz) {
            return Err(invalid("sensors.imu.rate_hz", "must be 50 to 2000 Hz"));
        }
        positive("sensors.imu.accel_range_g", imu.accel_range_g)?;
        positive("sensors.imu.gyro_range_dps", imu.gyro_range_dps)?;
        for (field, v) in [
            (
                "sensors.imu.accel_noise_ug_per_sqrt_hz",
                imu.accel_noise_ug_per_sqrt_hz,
            ),
            (
                "sensors.imu.gyro_noise_dps_per_sqrt_hz",
                imu.gyro_noise_dps_per_sqrt_hz,
            ),
            ("sensors.imu.accel_bias_walk", imu.accel_bias_walk),
            ("sensors.imu.gyro_bias_walk", imu.gyro_bias_walk),
            (
                "sensors.imu.vibration_m_s2_per_m_s",
                imu.vibration_m_s2_per_m_s,
            ),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(invalid(field, format!("must be >= 0, got {v}")));
            }
        }
        let mut rates = vec![
            ("sensors.wheels.rate_hz", self.sensors.wheels.rate_hz),
            ("sensors.motors.rate_hz", self.sensors.motors.rate_hz),
            ("sensors.battery.rate_hz", self.sensors.battery.rate_hz),
            ("sensors.pose.rate_hz", self.sensors.pose.rate_hz),
        ];
        if let Some(lidar) = &self.sensors.lidar {
            rates.push(("sensors.lidar.rate_hz", lidar.rate_hz));
            if !(1..=4096).contains(&lidar.beams) {
                return Err(invalid(
                    "sensors.lidar.beams",
                    format!("must be 1 to 4096, got {}", lidar.beams),
                ));
            }
            positive("sensors.lidar.max_range_m", lidar.max_range_m)?;
            if !(lidar.range_noise_m.is_finite() && lidar.range_noise_m >= 0.0) {
                return Err(invalid("sensors.lidar.range_noise_m", "must be >= 0"));
            }
            if !(0.0..=1.0).contains(&lidar.dropout) {
                return Err(invalid(
                    "sensors.lidar.dropout",
                    "must be a probability, 0 to 1",
                ));
            }
        }
        let b = &self.behaviour;
        positive("behaviour.neighbour_radius_m", b.neighbour_radius_m)?;
        positive("behaviour.separation_m", b.separation_m)?;
        positive("behaviour.formation_spacing_m", b.formation_spacing_m)?;
        positive("behaviour.goal_tolerance_m", b.goal_tolerance_m)?;
        if b.squad_size == 0 {
            return Err(invalid("behaviour.squad_size", "must be at least 1"));
        }
        for (i, o) in self.arena.placed.iter().enumerate() {
            positive(&format!("arena.placed[{i}].size_m"), o.size_m)?;
            let inside = o.x.abs() + o.size_m < self.arena.size_m[0] / 2.0
                && o.y.abs() + o.size_m < self.arena.size_m[1] / 2.0;
            if !inside {
                return Err(invalid(
                    &format!("arena.placed[{i}]"),
                    "must lie inside the arena",
                ));
            }
        }
        for (field, rate) in rates {
            positive(field, rate)?;
            let ratio = imu.rate_hz / rate;
            if ratio < 1.0 || (ratio - ratio.round()).abs() > 1e-9 {
                return Err(invalid(
                    field,
                    format!("must divide the IMU (physics) rate of {} Hz", imu.rate_hz),
                ));
            }
        }
        if self.sensors.encoder_ticks_per_rev == 0 {
            return Err(invalid(
                "sensors.encoder_ticks_per_rev",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_field() {
        SimConfig::default().validate().unwrap();
        let mut c = SimConfig::default();
        c.sensors.wheels.rate_hz = 70.0;
        assert_eq!(c.validate().unwrap_err().field, "sensors.wheels.rate_hz");
        let mut c = SimConfig::default();
        c.robots.count = 0;
        assert_eq!(c.validate().unwrap_err().field, "robots.count");
        let c = SimConfig {
            duration_s: f64::NAN,
            ..SimConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "duration_s");
    }
}
