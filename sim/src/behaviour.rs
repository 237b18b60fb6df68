//! The behaviour plugin: wander with obstacle avoidance, from a fan of range probes.
//!
//! Runs at the motor command rate. Heading noise is an Ornstein-Uhlenbeck process, so robots
//! meander smoothly; a fan of ray casts (the robot's proximity sensors) slows them near
//! obstacles and steers them away, and backs them off when something is right ahead.

use bevy::app::{App, Plugin, Update};
use bevy::ecs::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rapier3d::prelude::*;

use crate::robots::{Drive, Robot, RobotParams, axes};
use crate::world::{Physics, SimClock, StepSet};

const PROBE_RANGE: f32 = 2.5;
const PROBE_ANGLES_DEG: [f32; 7] = [-60.0, -35.0, -15.0, 0.0, 15.0, 35.0, 60.0];

#[derive(Component)]
pub(crate) struct Wander {
    turn_bias: f32,
    rng: ChaCha8Rng,
}

/// Physics steps between two controller updates.
#[derive(Resource)]
pub(crate) struct ControlPeriod {
    pub steps: u64,
    pub seed: u64,
}

pub(crate) struct BehaviourPlugin;

impl Plugin for BehaviourPlugin {
    fn build(&self, app: &mut App) {
        app.add_systems(
            Update,
            (attach_wander, wander).chain().in_set(StepSet::Decide),
        );
    }
}

fn attach_wander(
    mut commands: Commands,
    period: Res<ControlPeriod>,
    fresh: Query<(Entity, &Robot), Without<Wander>>,
) {
    for (entity, robot) in &fresh {
        let rng =
            ChaCha8Rng::seed_from_u64(period.seed.wrapping_mul(0x9e37_79b9) ^ robot.index as u64);
        commands.entity(entity).insert(Wander {
            turn_bias: 0.0,
            rng,
        });
    }
}

fn wander(
    physics: Res<Physics>,
    clock: Res<SimClock>,
    period: Res<ControlPeriod>,
    params: Res<RobotParams>,
    mut robots: Query<(&Robot, &mut Drive, &mut Wander)>,
) {
    if !clock.step.is_multiple_of(period.steps) {
        return;
    }
    let p = &params.0;
    let dt = clock.dt() * period.steps as f32;
    let cruise = p.cruise_speed_m_s as f32;
    let half_length = p.body_m[0] as f32 / 2.0;
    for (robot, mut drive, mut wander) in &mut robots {
        let Some(body) = physics.world.bodies.get(robot.body) else {
            continue;
        };
        let (forward, left) = axes(body.rotation());
        let origin = body.translation();
        let filter = QueryFilter::default().exclude_rigid_body(robot.body);
        let mut repulsion = 0.0;
        let mut front_clearance = PROBE_RANGE;
        for angle in PROBE_ANGLES_DEG {
            let a = angle.to_radians();
            let dir = forward * a.cos() + left * a.sin();
            let distance = physics
                .world
                .cast_ray(&Ray::new(origin, dir), PROBE_RANGE, true, filter)
                .map_or(PROBE_RANGE, |(_, toi)| toi - half_length)
                .max(0.01);
            // Obstacles on the left (positive angle) push the heading right.
            repulsion -= a.signum() * (1.0 / distance - 1.0 / PROBE_RANGE);
            if angle.abs() <= 15.0 {
                front_clearance = front_clearance.min(distance);
            }
        }
        let noise: f32 = StandardNormal.sample(&mut wander.rng);
        wander.turn_bias += -wander.turn_bias * 0.5 * dt + 0.8 * noise * dt.sqrt();
        let (speed, yaw_rate) = if front_clearance < 0.25 {
            // Blocked: back off while turning towards the freer side.
            (-0.3 * cruise, if repulsion >= 0.0 { 1.5 } else { -1.5 })
        } else {
            let slow = ((front_clearance - 0.25) / 1.0).clamp(0.15, 1.0);
            (
                cruise * slow,
                (wander.turn_bias + 0.6 * repulsion).clamp(-2.0, 2.0),
            )
        };
        let half_base = p.wheel_base_m as f32 / 2.0;
        let radius = p.wheel_radius_m as f32;
        drive.command = [
            (speed - yaw_rate * half_base) / radius,
            (speed + yaw_rate * half_base) / radius,
        ];
    }
}
