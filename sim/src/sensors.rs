//! The sensor plugin: IMU, wheel encoders and motor telemetry, sampled after each physics
//! step from the bodies' true motion and the motors' state, through datasheet noise models.

use bevy::app::{App, Plugin, Update};
use bevy::ecs::prelude::*;
use lydlr_codec::{Frame, SampleType, SensorKind, StreamSchema, quantize_to_lsb};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rapier3d::prelude::*;

use crate::behaviour::ControlPeriod;
use crate::robots::{Drive, Robot, axes};
use crate::world::{Arena, Physics, SimClock, StepSet};
use crate::{ImuConfig, LidarConfig, SensorFrame, SimConfig};
use crate::{battery, lidar};

const STANDARD_GRAVITY: f64 = 9.80665;
const GRAVITY: Vector = Vector::new(0.0, -9.81, 0.0);
const ADC_COUNTS: f64 = 32768.0;
/// Motor command resolution (rad/s) and current sense resolution (A).
const COMMAND_LSB: f64 = 0.01;
const CURRENT_LSB: f64 = 0.001;
const CURRENT_NOISE_A: f64 = 0.02;
/// Lidar range resolution (millimetres, as most scanners report).
const LIDAR_LSB_M: f64 = 0.001;

/// The streams a robot produces. `Pose` is ground truth: exported and logged for evaluation,
/// never sent to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamId {
    Imu = 0,
    Wheels = 1,
    Motors = 2,
    Battery = 3,
    Lidar = 4,
    Pose = 5,
}

impl StreamId {
    pub const ALL: [StreamId; 6] = [
        StreamId::Imu,
        StreamId::Wheels,
        StreamId::Motors,
        StreamId::Battery,
        StreamId::Lidar,
        StreamId::Pose,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether a robot sends this stream to its edge node.
    pub fn is_transmitted(self) -> bool {
        self != StreamId::Pose
    }
}

/// The streams a configuration produces, in [`StreamId`] order.
pub fn enabled_streams(config: &SimConfig) -> Vec<StreamId> {
    StreamId::ALL
        .into_iter()
        .filter(|s| *s != StreamId::Lidar || config.sensors.lidar.is_some())
        .collect()
}

fn accel_lsb(imu: &ImuConfig) -> f64 {
    imu.accel_range_g * STANDARD_GRAVITY / ADC_COUNTS
}

fn gyro_lsb(imu: &ImuConfig) -> f64 {
    imu.gyro_range_dps.to_radians() / ADC_COUNTS
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// Schemas of the enabled streams, in the order of [`enabled_streams`].
pub fn stream_schemas(config: &SimConfig) -> Vec<StreamSchema> {
    enabled_streams(config)
        .into_iter()
        .map(|id| schema(config, id))
        .collect()
}

/// The schema of one stream.
pub fn schema(config: &SimConfig, id: StreamId) -> StreamSchema {
    let imu = &config.sensors.imu;
    let accel_sigma = imu.accel_noise_ug_per_sqrt_hz * 1e-6 * STANDARD_GRAVITY * imu.rate_hz.sqrt();
    let gyro_sigma = imu.gyro_noise_dps_per_sqrt_hz.to_radians() * imu.rate_hz.sqrt();
    let (a, g) = (Some(accel_lsb(imu)), Some(gyro_lsb(imu)));
    match id {
        StreamId::Imu => StreamSchema {
            name: "imu".into(),
            kind: SensorKind::Imu,
            sample_type: SampleType::F32,
            channels: names(&[
                "accel_x", "accel_y", "accel_z", "gyro_x", "gyro_y", "gyro_z",
            ]),
            units: names(&["m/s^2", "m/s^2", "m/s^2", "rad/s", "rad/s", "rad/s"]),
            rate_hz: imu.rate_hz,
            noise_sigma: vec![
                accel_sigma,
                accel_sigma,
                accel_sigma,
                gyro_sigma,
                gyro_sigma,
                gyro_sigma,
            ],
            lsb: vec![a, a, a, g, g, g],
        },
        StreamId::Wheels => StreamSchema {
            name: "wheels".into(),
            kind: SensorKind::WheelEncoder,
            sample_type: SampleType::I64,
            channels: names(&["left_ticks", "right_ticks"]),
            units: names(&["tick", "tick"]),
            rate_hz: config.sensors.wheels.rate_hz,
            noise_sigma: vec![0.5, 0.5],
            lsb: vec![Some(1.0), Some(1.0)],
        },
        StreamId::Motors => StreamSchema {
            name: "motors".into(),
            kind: SensorKind::MotorCommand,
            sample_type: SampleType::F32,
            channels: names(&["cmd_left", "cmd_right", "current_left", "current_right"]),
            units: names(&["rad/s", "rad/s", "A", "A"]),
            rate_hz: config.sensors.motors.rate_hz,
            noise_sigma: vec![0.0, 0.0, CURRENT_NOISE_A, CURRENT_NOISE_A],
            lsb: vec![
                Some(COMMAND_LSB),
                Some(COMMAND_LSB),
                Some(CURRENT_LSB),
                Some(CURRENT_LSB),
            ],
        },
        StreamId::Battery => StreamSchema {
            name: "battery".into(),
            kind: SensorKind::Battery,
            sample_type: SampleType::F32,
            channels: names(&["voltage", "current"]),
            units: names(&["V", "A"]),
            rate_hz: config.sensors.battery.rate_hz,
            noise_sigma: vec![battery::VOLTAGE_NOISE_V, CURRENT_NOISE_A],
            lsb: vec![Some(battery::VOLTAGE_LSB), Some(CURRENT_LSB)],
        },
        StreamId::Lidar => {
            let lidar = config.sensors.lidar.clone().unwrap_or_default();
            StreamSchema {
                name: "lidar".into(),
                kind: SensorKind::Lidar,
                sample_type: SampleType::F32,
                channels: (0..lidar.beams).map(|i| format!("range_{i:04}")).collect(),
                units: vec!["m".into(); lidar.beams],
                rate_hz: lidar.rate_hz,
                noise_sigma: vec![lidar.range_noise_m; lidar.beams],
                lsb: vec![Some(LIDAR_LSB_M); lidar.beams],
            }
        }
        StreamId::Pose => StreamSchema {
            name: "pose".into(),
            kind: SensorKind::Pose,
            sample_type: SampleType::F64,
            channels: names(&["x", "y", "yaw"]),
            units: names(&["m", "m", "rad"]),
            rate_hz: config.sensors.pose.rate_hz,
            noise_sigma: vec![0.0; 3],
            lsb: vec![None; 3],
        },
    }
}

/// Frames waiting to be collected by the caller.
#[derive(Resource, Default)]
pub(crate) struct Outbox {
    pub frames: Vec<SensorFrame>,
}

#[derive(Resource, Clone)]
struct SensorParams {
    imu: ImuConfig,
    wheel_steps: u64,
    motor_steps: u64,
    battery_steps: u64,
    pose_steps: u64,
    lidar: Option<(LidarConfig, u64)>,
    ticks_per_rev: f64,
    seed: u64,
}

/// Per-robot sensor state: last velocity (for acceleration), biases, battery, noise source.
#[derive(Component)]
struct SensorState {
    previous_velocity: Vector,
    accel_bias: [f64; 3],
    gyro_bias: [f64; 3],
    battery: battery::Battery,
    ranges: Vec<f32>,
    rng: ChaCha8Rng,
}

pub(crate) struct SensorPlugin {
    config: SimConfig,
}

impl SensorPlugin {
    pub fn new(config: &SimConfig) -> Self {
        Self {
            config: config.clone(),
        }
    }
}

impl Plugin for SensorPlugin {
    fn build(&self, app: &mut App) {
        let c = &self.config;
        app.insert_resource(Outbox::default())
            .insert_resource(SensorParams {
                imu: c.sensors.imu.clone(),
                wheel_steps: c.decimation(c.sensors.wheels.rate_hz),
                motor_steps: c.decimation(c.sensors.motors.rate_hz),
                battery_steps: c.decimation(c.sensors.battery.rate_hz),
                pose_steps: c.decimation(c.sensors.pose.rate_hz),
                lidar: c.sensors.lidar.clone().map(|l| {
                    let steps = c.decimation(l.rate_hz);
                    (l, steps)
                }),
                ticks_per_rev: f64::from(c.sensors.encoder_ticks_per_rev),
                seed: c.seed,
            })
            .insert_resource(ControlPeriod {
                steps: c.decimation(c.sensors.motors.rate_hz),
                seed: c.seed,
            })
            .add_systems(
                Update,
                (attach_sensors, sample, scan_lidar)
                    .chain()
                    .in_set(StepSet::Sense),
            );
    }
}

fn attach_sensors(
    mut commands: Commands,
    params: Res<SensorParams>,
    fresh: Query<(Entity, &Robot), Without<SensorState>>,
) {
    for (entity, robot) in &fresh {
        let mut rng = ChaCha8Rng::seed_from_u64(
            params.seed.wrapping_mul(0x2545_f491) ^ (robot.index as u64) << 20,
        );
        // Turn-on bias: a fresh bias every power cycle, a few milli-g and tenths of a degree/s.
        let mut turn_on =
            |sigma: f64| -> [f64; 3] { std::array::from_fn(|_| sigma * gaussian(&mut rng)) };
        let accel_bias = turn_on(0.02);
        let gyro_bias = turn_on(0.003);
        let battery = battery::Battery::charged(&mut rng);
        commands.entity(entity).insert(SensorState {
            previous_velocity: Vector::ZERO,
            accel_bias,
            gyro_bias,
            battery,
            ranges: Vec::new(),
            rng,
        });
    }
}

fn gaussian(rng: &mut ChaCha8Rng) -> f64 {
    StandardNormal.sample(rng)
}

/// Clips to the ADC range and rounds to its step, as the sensor's converter does.
fn adc(value: f64, lsb: f64) -> f64 {
    let full_scale = lsb * (ADC_COUNTS - 1.0);
    quantize_to_lsb(
        value.clamp(-lsb * ADC_COUNTS, full_scale),
        lsb,
        SampleType::F32,
    )
}

fn sample(
    physics: Res<Physics>,
    clock: Res<SimClock>,
    params: Res<SensorParams>,
    mut outbox: ResMut<Outbox>,
    mut robots: Query<(&Robot, &Drive, &mut SensorState)>,
) {
    let imu = &params.imu;
    let dt = clock.dt();
    let dt64 = f64::from(dt);
    let t = clock.time_ns();
    let accel_sigma = imu.accel_noise_ug_per_sqrt_hz * 1e-6 * STANDARD_GRAVITY * imu.rate_hz.sqrt();
    let gyro_sigma = imu.gyro_noise_dps_per_sqrt_hz.to_radians() * imu.rate_hz.sqrt();
    let (a_lsb, g_lsb) = (accel_lsb(imu), gyro_lsb(imu));

    for (robot, drive, mut state) in &mut robots {
        let Some(body) = physics.world.bodies.get(robot.body) else {
            continue;
        };
        let mut emit = |stream: StreamId, values: Vec<f64>| {
            outbox.frames.push(SensorFrame {
                robot: robot.index,
                stream,
                frame: Frame::new(t, values),
            });
        };
        let rotation = *body.rotation();
        let velocity = body.linvel();
        let accel = (velocity - state.previous_velocity) / dt;
        state.previous_velocity = velocity;
        // Specific force in the body frame, then in the IMU's forward-left-up axes.
        let specific = rotation.inverse() * (accel - GRAVITY);
        let omega = rotation.inverse() * body.angvel();
        let (forward, _) = axes(&rotation);
        let speed = f64::from(velocity.dot(forward).abs());
        let phase = (drive.angle[0] + drive.angle[1]) * 3.0;
        let vibration = imu.vibration_m_s2_per_m_s * speed;
        let true_accel = [
            f64::from(specific.x) + vibration * phase.sin() * 0.5,
            f64::from(-specific.z) + vibration * (phase * 1.3).cos() * 0.3,
            f64::from(specific.y) + vibration * phase.cos(),
        ];
        let true_gyro = [f64::from(omega.x), f64::from(-omega.z), f64::from(omega.y)];

        let SensorState {
            accel_bias,
            gyro_bias,
            battery,
            rng,
            ..
        } = &mut *state;
        let mut measure = |truth: f64, bias: &mut f64, walk: f64, sigma: f64, lsb: f64| {
            *bias += walk * dt64.sqrt() * gaussian(rng);
            adc(truth + *bias + sigma * gaussian(rng), lsb)
        };
        let mut values = Vec::with_capacity(6);
        for (truth, bias) in true_accel.iter().zip(accel_bias.iter_mut()) {
            values.push(measure(
                *truth,
                bias,
                imu.accel_bias_walk,
                accel_sigma,
                a_lsb,
            ));
        }
        for (truth, bias) in true_gyro.iter().zip(gyro_bias.iter_mut()) {
            values.push(measure(*truth, bias, imu.gyro_bias_walk, gyro_sigma, g_lsb));
        }
        emit(StreamId::Imu, values);

        let draw = f64::from(drive.current[0].abs() + drive.current[1].abs());
        battery.discharge(draw, dt64);

        if clock.step.is_multiple_of(params.wheel_steps) {
            let ticks = drive
                .angle
                .map(|a| (a / std::f64::consts::TAU * params.ticks_per_rev).floor());
            emit(StreamId::Wheels, ticks.to_vec());
        }
        if clock.step.is_multiple_of(params.motor_steps) {
            let mut values = Vec::with_capacity(4);
            for wheel in 0..2 {
                values.push(quantize_to_lsb(
                    f64::from(drive.command[wheel]),
                    COMMAND_LSB,
                    SampleType::F32,
                ));
            }
            for wheel in 0..2 {
                let sensed = f64::from(drive.current[wheel]) + CURRENT_NOISE_A * gaussian(rng);
                values.push(quantize_to_lsb(sensed, CURRENT_LSB, SampleType::F32));
            }
            emit(StreamId::Motors, values);
        }
        if clock.step.is_multiple_of(params.battery_steps) {
            let (volts, amps) = battery.measure(draw, rng);
            emit(
                StreamId::Battery,
                vec![
                    quantize_to_lsb(volts, battery::VOLTAGE_LSB, SampleType::F32),
                    quantize_to_lsb(amps, CURRENT_LSB, SampleType::F32),
                ],
            );
        }
        if clock.step.is_multiple_of(params.pose_steps) {
            let p = body.translation();
            let yaw = f64::from((-forward.z).atan2(forward.x));
            emit(StreamId::Pose, vec![f64::from(p.x), f64::from(-p.z), yaw]);
        }
    }
}

fn scan_lidar(
    physics: Res<Physics>,
    clock: Res<SimClock>,
    params: Res<SensorParams>,
    arena: Res<Arena>,
    mut outbox: ResMut<Outbox>,
    mut robots: Query<(&Robot, &mut SensorState)>,
) {
    let Some((lidar, steps)) = &params.lidar else {
        return;
    };
    if !clock.step.is_multiple_of(*steps) {
        return;
    }
    let max_range = lidar.max_range_m as f32;
    for (robot, mut state) in &mut robots {
        let Some(body) = physics.world.bodies.get(robot.body) else {
            continue;
        };
        let (forward, left) = axes(body.rotation());
        let mount = lidar::Mount {
            origin: body.translation(),
            forward,
            left,
            own_body: robot.body,
            floor: arena.ground,
        };
        let SensorState { ranges, rng, .. } = &mut *state;
        lidar::scan(&physics.world, &mount, lidar.beams, max_range, ranges);
        let values = ranges
            .iter()
            .map(|&r| {
                let dropped = rng.random_bool(lidar.dropout);
                if !r.is_finite() || dropped {
                    return 0.0;
                }
                let noisy = f64::from(r) + lidar.range_noise_m * gaussian(rng);
                quantize_to_lsb(
                    noisy.clamp(LIDAR_LSB_M, lidar.max_range_m),
                    LIDAR_LSB_M,
                    SampleType::F32,
                )
            })
            .collect();
        outbox.frames.push(SensorFrame {
            robot: robot.index,
            stream: StreamId::Lidar,
            frame: Frame::new(clock.time_ns(), values),
        });
    }
}
