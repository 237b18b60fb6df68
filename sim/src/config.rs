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
    pub sensors: SensorsConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            duration_s: 30.0,
            arena: ArenaConfig::default(),
            robots: RobotConfig::default(),
            sensors: SensorsConfig::default(),
        }
    }
}

/// A walled rectangle with randomly placed box and cylinder obstacles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArenaConfig {
    /// Inner size in metres along x and y.
    pub size_m: [f64; 2],
    pub wall_height_m: f64,
    pub obstacles: usize,
    /// Obstacle half-size (box) or radius (cylinder) range in metres.
    pub obstacle_size_m: [f64; 2],
}

impl Default for ArenaConfig {
    fn default() -> Self {
        Self {
            size_m: [12.0, 12.0],
            wall_height_m: 0.5,
            obstacles: 6,
            obstacle_size_m: [0.2, 0.6],
        }
    }
}

/// Differential-drive ground robots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RobotConfig {
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
    pub motors: RateConfig,
    /// Wheel encoder resolution.
    pub encoder_ticks_per_rev: u32,
}

impl Default for SensorsConfig {
    fn default() -> Self {
        Self {
            imu: ImuConfig::default(),
            wheels: RateConfig { rate_hz: 50.0 },
            motors: RateConfig { rate_hz: 50.0 },
            encoder_ticks_per_rev: 2048,
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
        for (field, rate) in [
            ("sensors.wheels.rate_hz", self.sensors.wheels.rate_hz),
            ("sensors.motors.rate_hz", self.sensors.motors.rate_hz),
        ] {
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
