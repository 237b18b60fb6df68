//! The robot plugin: differential-drive bodies, their motors and the tyre traction model.

use bevy::app::{App, Plugin, Startup, Update};
use bevy::ecs::prelude::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rapier3d::prelude::*;

use crate::world::{Arena, Physics, SimClock, StepSet};
use crate::{Pose2, RobotConfig, SimConfig};

const GRAVITY: f32 = 9.81;
/// Torque per ampere at the wheel, gearbox included.
const TORQUE_PER_AMP: f32 = 0.25;
/// Current the drive draws to overcome its own friction while turning.
const FRICTION_CURRENT: f32 = 0.15;

#[derive(Component)]
pub(crate) struct Robot {
    pub index: usize,
    pub body: RigidBodyHandle,
}

/// State of the two wheel motors: 0 is left, 1 is right.
#[derive(Component, Default)]
pub(crate) struct Drive {
    /// Commanded wheel speed, rad/s.
    pub command: [f32; 2],
    /// Actual wheel speed, rad/s.
    pub speed: [f32; 2],
    /// Integrated wheel angle, rad (f64: hours of driving must not lose encoder ticks).
    pub angle: [f64; 2],
    /// Motor current, A.
    pub current: [f32; 2],
}

#[derive(Resource, Clone)]
pub(crate) struct RobotParams(pub RobotConfig);

pub(crate) struct RobotPlugin {
    config: SimConfig,
}

impl RobotPlugin {
    pub fn new(config: &SimConfig) -> Self {
        Self {
            config: config.clone(),
        }
    }
}

#[derive(Resource)]
struct SpawnSeed(u64);

impl Plugin for RobotPlugin {
    fn build(&self, app: &mut App) {
        app.insert_resource(RobotParams(self.config.robots.clone()))
            .insert_resource(SpawnSeed(self.config.seed))
            .add_systems(Startup, spawn_robots)
            .add_systems(Update, drive_motors.in_set(StepSet::Actuate));
    }
}

fn spawn_robots(
    mut commands: Commands,
    mut physics: ResMut<Physics>,
    arena: Res<Arena>,
    params: Res<RobotParams>,
    seed: Res<SpawnSeed>,
) {
    let p = &params.0;
    let mut rng = ChaCha8Rng::seed_from_u64(seed.0 ^ 0x5b0a_77ed);
    let mut spots = arena.spawn_points.clone();
    spots.shuffle(&mut rng);
    let [length, width, height] = p.body_m.map(|v| v as f32);
    for (index, &(x, y)) in spots.iter().take(p.count).enumerate() {
        let yaw = (index as f32 * 2.399_963) % std::f32::consts::TAU;
        let body = RigidBodyBuilder::dynamic()
            .translation(Vector::new(x, height / 2.0, -y))
            .rotation(Vector::new(0.0, yaw, 0.0))
            .enabled_rotations(false, true, false)
            .linear_damping(0.05)
            .can_sleep(false);
        let collider = ColliderBuilder::cuboid(length / 2.0, height / 2.0, width / 2.0)
            .mass(p.mass_kg as f32)
            .friction(0.0)
            .friction_combine_rule(CoefficientCombineRule::Min)
            .restitution(0.2);
        let (body, _) = physics.world.insert(body, collider);
        commands.spawn((Robot { index, body }, Drive::default()));
    }
}

/// Body-frame axes of a robot: forward is +x, left is -z, up is +y.
pub(crate) fn axes(rotation: &Rotation) -> (Vector, Vector) {
    (*rotation * Vector::X, *rotation * Vector::NEG_Z)
}

/// Speed loop of each wheel motor, then traction forces at the contact points: the tyre
/// pushes in proportion to its slip, up to the friction limit, so wheels spin against walls
/// and the encoders count turns the body never made.
fn drive_motors(
    mut physics: ResMut<Physics>,
    clock: Res<SimClock>,
    params: Res<RobotParams>,
    mut robots: Query<(&Robot, &mut Drive)>,
) {
    let p = &params.0;
    let dt = clock.dt();
    let mass = p.mass_kg as f32;
    let radius = p.wheel_radius_m as f32;
    let half_base = p.wheel_base_m as f32 / 2.0;
    let max_per_wheel = p.traction_mu as f32 * mass * GRAVITY / 2.0;
    // Full traction at 0.1 m/s of slip; stiff enough to track, soft enough to stay stable
    // at the explicit 200 Hz step.
    let stiffness = max_per_wheel / 0.1;
    let max_accel = p.max_wheel_accel_rad_s2 as f32;
    let tau = p.motor_time_constant_s as f32;
    let max_speed = p.max_wheel_speed_rad_s as f32;

    for (robot, mut drive) in &mut robots {
        let Some(body) = physics.world.bodies.get_mut(robot.body) else {
            continue;
        };
        let (forward, left) = axes(body.rotation());
        let v = body.linvel();
        let yaw_rate = body.angvel().y;
        let v_forward = v.dot(forward);
        let v_lateral = v.dot(left);
        let centre = body.translation();
        body.reset_forces(false);

        for wheel in 0..2 {
            let side = if wheel == 0 { 1.0 } else { -1.0 };
            let target = drive.command[wheel].clamp(-max_speed, max_speed);
            let accel = ((target - drive.speed[wheel]) / tau).clamp(-max_accel, max_accel);
            drive.speed[wheel] += accel * dt;
            drive.angle[wheel] += f64::from(drive.speed[wheel] * dt);

            let contact_speed = v_forward - side * yaw_rate * half_base;
            let slip = drive.speed[wheel] * radius - contact_speed;
            let force = (stiffness * slip).clamp(-max_per_wheel, max_per_wheel);
            let point = centre + left * (side * half_base);
            body.add_force_at_point(forward * force, point, true);

            let torque = force * radius + 0.002 * accel;
            drive.current[wheel] =
                torque / TORQUE_PER_AMP + FRICTION_CURRENT * drive.speed[wheel].signum();
        }
        let lateral_limit = p.traction_mu as f32 * mass * GRAVITY;
        let lateral = (-v_lateral * lateral_limit / 0.05).clamp(-lateral_limit, lateral_limit);
        body.add_force(left * lateral, true);
    }
}

pub(crate) fn poses(world: &mut World) -> Vec<Pose2> {
    let mut robots: Vec<(usize, RigidBodyHandle)> = world
        .query::<&Robot>()
        .iter(world)
        .map(|r| (r.index, r.body))
        .collect();
    robots.sort_by_key(|r| r.0);
    let physics = world.resource::<Physics>();
    robots
        .iter()
        .filter_map(|&(_, handle)| physics.world.bodies.get(handle))
        .map(|body| {
            let t = body.translation();
            let (forward, _) = axes(body.rotation());
            Pose2 {
                x: t.x,
                y: -t.z,
                yaw: (-forward.z).atan2(forward.x),
            }
        })
        .collect()
}
