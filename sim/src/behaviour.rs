//! The behaviour plugin: the controllers that turn what a robot knows into motor commands.
//!
//! Runs at the motor command rate. Every behaviour proposes a speed and a yaw rate; a shared
//! obstacle-avoidance layer, fed by a fan of ray casts (the robot's proximity sensors), then
//! slows the robot near obstacles, steers it away, and backs it off when something is right
//! ahead. Neighbour information (flocking, formations) comes from a snapshot of every robot's
//! pose taken at the start of the control step, so the result does not depend on update order.

use std::f32::consts::PI;

use bevy::app::{App, Plugin, Update};
use bevy::ecs::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rapier3d::prelude::*;

use crate::config::{BehaviourConfig, BehaviourKind};
use crate::robots::{Drive, Robot, RobotParams, axes};
use crate::world::{Arena, Physics, SimClock, StepSet};

const PROBE_RANGE: f32 = 2.5;
const PROBE_ANGLES_DEG: [f32; 7] = [-60.0, -35.0, -15.0, 0.0, 15.0, 35.0, 60.0];
const HEADING_GAIN: f32 = 2.0;
const MAX_YAW_RATE: f32 = 2.0;
/// A goal not reached in this long is replaced (it may sit behind an obstacle).
const GOAL_TIMEOUT_S: f32 = 40.0;

/// Per-robot controller state.
#[derive(Component)]
pub(crate) struct Controller {
    turn_bias: f32,
    goal: Option<[f32; 2]>,
    goal_age_s: f32,
    rng: ChaCha8Rng,
}

/// Physics steps between two controller updates.
#[derive(Resource)]
pub(crate) struct ControlPeriod {
    pub steps: u64,
    pub seed: u64,
}

#[derive(Resource, Clone)]
struct Behaviour(BehaviourConfig);

pub(crate) struct BehaviourPlugin {
    config: BehaviourConfig,
}

impl BehaviourPlugin {
    pub fn new(config: &BehaviourConfig) -> Self {
        Self {
            config: config.clone(),
        }
    }
}

impl Plugin for BehaviourPlugin {
    fn build(&self, app: &mut App) {
        app.insert_resource(Behaviour(self.config.clone()))
            .add_systems(
                Update,
                (attach_controllers, decide).chain().in_set(StepSet::Decide),
            );
    }
}

fn attach_controllers(
    mut commands: Commands,
    period: Res<ControlPeriod>,
    fresh: Query<(Entity, &Robot), Without<Controller>>,
) {
    for (entity, robot) in &fresh {
        let rng =
            ChaCha8Rng::seed_from_u64(period.seed.wrapping_mul(0x9e37_79b9) ^ robot.index as u64);
        commands.entity(entity).insert(Controller {
            turn_bias: 0.0,
            goal: None,
            goal_age_s: 0.0,
            rng,
        });
    }
}

/// Where a robot is, in arena coordinates (x, y; yaw counter-clockwise from x).
#[derive(Clone, Copy)]
struct Agent {
    position: [f32; 2],
    yaw: f32,
    speed: f32,
}

fn wrap(angle: f32) -> f32 {
    (angle + PI).rem_euclid(2.0 * PI) - PI
}

fn steer_towards(yaw: f32, target: f32) -> f32 {
    (HEADING_GAIN * wrap(target - yaw)).clamp(-MAX_YAW_RATE, MAX_YAW_RATE)
}

/// A uniform grid over the arena for neighbour queries; cells in a fixed order, so sums over
/// neighbours come out the same in every run.
struct Grid {
    cell: f32,
    origin: [f32; 2],
    columns: usize,
    rows: usize,
    members: Vec<Vec<usize>>,
}

impl Grid {
    fn new(agents: &[Agent], half: [f32; 2], cell: f32) -> Grid {
        let columns = ((2.0 * half[0] / cell).ceil() as usize).max(1);
        let rows = ((2.0 * half[1] / cell).ceil() as usize).max(1);
        let mut grid = Grid {
            cell,
            origin: [-half[0], -half[1]],
            columns,
            rows,
            members: vec![Vec::new(); columns * rows],
        };
        for (i, a) in agents.iter().enumerate() {
            let (c, r) = grid.cell_of(a.position);
            grid.members[r * columns + c].push(i);
        }
        grid
    }

    fn cell_of(&self, p: [f32; 2]) -> (usize, usize) {
        let c = ((p[0] - self.origin[0]) / self.cell)
            .floor()
            .clamp(0.0, (self.columns - 1) as f32);
        let r = ((p[1] - self.origin[1]) / self.cell)
            .floor()
            .clamp(0.0, (self.rows - 1) as f32);
        (c as usize, r as usize)
    }

    fn around(&self, p: [f32; 2]) -> impl Iterator<Item = usize> + '_ {
        let (c, r) = self.cell_of(p);
        let cols = c.saturating_sub(1)..=(c + 1).min(self.columns - 1);
        let rows = r.saturating_sub(1)..=(r + 1).min(self.rows - 1);
        rows.flat_map(move |r| cols.clone().map(move |c| r * self.columns + c))
            .flat_map(move |cell| self.members[cell].iter().copied())
    }
}

#[allow(clippy::too_many_arguments)]
fn decide(
    physics: Res<Physics>,
    clock: Res<SimClock>,
    period: Res<ControlPeriod>,
    params: Res<RobotParams>,
    behaviour: Res<Behaviour>,
    arena: Res<Arena>,
    mut robots: Query<(&Robot, &mut Drive, &mut Controller)>,
) {
    if !clock.step.is_multiple_of(period.steps) {
        return;
    }
    let p = &params.0;
    let b = &behaviour.0;
    let dt = clock.dt() * period.steps as f32;
    let cruise = p.cruise_speed_m_s as f32;
    let half_length = p.body_m[0] as f32 / 2.0;

    // Snapshot of every robot, indexed by robot index.
    let mut agents = vec![
        Agent {
            position: [0.0; 2],
            yaw: 0.0,
            speed: 0.0
        };
        robots
            .iter()
            .map(|(r, _, _)| r.index + 1)
            .max()
            .unwrap_or(0)
    ];
    for (robot, _, _) in &robots {
        if let Some(body) = physics.world.bodies.get(robot.body) {
            let (forward, _) = axes(body.rotation());
            let t = body.translation();
            agents[robot.index] = Agent {
                position: [t.x, -t.z],
                yaw: (-forward.z).atan2(forward.x),
                speed: body.linvel().dot(forward),
            };
        }
    }
    let half = [arena.half_x, arena.half_y];
    let grid = (b.kind == BehaviourKind::Flock)
        .then(|| Grid::new(&agents, half, b.neighbour_radius_m as f32));

    for (robot, mut drive, mut controller) in &mut robots {
        let Some(body) = physics.world.bodies.get(robot.body) else {
            continue;
        };
        let me = agents[robot.index];
        let noise: f32 = StandardNormal.sample(&mut controller.rng);
        controller.turn_bias += -controller.turn_bias * 0.5 * dt + 0.8 * noise * dt.sqrt();

        let (mut speed, mut yaw_rate) = match b.kind {
            BehaviourKind::Wander => (cruise, controller.turn_bias),
            BehaviourKind::Flock => flock(
                &agents,
                grid.as_ref(),
                robot.index,
                b,
                cruise,
                controller.turn_bias,
            ),
            BehaviourKind::Formation => {
                let leader = robot.index - robot.index % b.squad_size;
                if leader == robot.index {
                    (cruise * 0.7, controller.turn_bias)
                } else {
                    formation(&agents[leader], &me, robot.index - leader, b, cruise)
                }
            }
            BehaviourKind::Goal => {
                controller.goal_age_s += dt;
                let reached = controller.goal.is_some_and(|g| {
                    (g[0] - me.position[0]).hypot(g[1] - me.position[1]) < b.goal_tolerance_m as f32
                });
                if controller.goal.is_none() || reached || controller.goal_age_s > GOAL_TIMEOUT_S {
                    let margin = 1.0f32.min(half[0] * 0.5).min(half[1] * 0.5);
                    let g = [
                        controller
                            .rng
                            .random_range(-half[0] + margin..=half[0] - margin),
                        controller
                            .rng
                            .random_range(-half[1] + margin..=half[1] - margin),
                    ];
                    controller.goal = Some(g);
                    controller.goal_age_s = 0.0;
                }
                let g = controller.goal.unwrap_or(me.position);
                let (dx, dy) = (g[0] - me.position[0], g[1] - me.position[1]);
                let distance = dx.hypot(dy);
                (
                    cruise * (distance / 1.0).clamp(0.3, 1.0),
                    steer_towards(me.yaw, dy.atan2(dx)),
                )
            }
        };

        // Obstacle avoidance from the proximity probes.
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
        if front_clearance < 0.25 {
            // Blocked: back off while turning towards the freer side.
            speed = -0.3 * cruise;
            yaw_rate = if repulsion >= 0.0 { 1.5 } else { -1.5 };
        } else {
            speed *= ((front_clearance - 0.25) / 1.0).clamp(0.15, 1.0);
            yaw_rate = (yaw_rate + 0.6 * repulsion).clamp(-MAX_YAW_RATE, MAX_YAW_RATE);
        }

        let half_base = p.wheel_base_m as f32 / 2.0;
        let radius = p.wheel_radius_m as f32;
        drive.command = [
            (speed - yaw_rate * half_base) / radius,
            (speed + yaw_rate * half_base) / radius,
        ];
    }
}

/// Reynolds' boids on a differential drive: steer towards the weighted sum of separation,
/// alignment and cohesion.
fn flock(
    agents: &[Agent],
    grid: Option<&Grid>,
    me_index: usize,
    b: &BehaviourConfig,
    cruise: f32,
    turn_bias: f32,
) -> (f32, f32) {
    let me = agents[me_index];
    let radius = b.neighbour_radius_m as f32;
    let separation_radius = b.separation_m as f32;
    let (mut sep, mut align, mut centre, mut count) = ([0.0f32; 2], [0.0f32; 2], [0.0f32; 2], 0);
    for other in grid.into_iter().flat_map(|g| g.around(me.position)) {
        if other == me_index {
            continue;
        }
        let o = agents[other];
        let (dx, dy) = (
            me.position[0] - o.position[0],
            me.position[1] - o.position[1],
        );
        let d = dx.hypot(dy);
        if d > radius || d < 1e-4 {
            continue;
        }
        if d < separation_radius {
            sep[0] += dx / (d * d);
            sep[1] += dy / (d * d);
        }
        align[0] += o.yaw.cos();
        align[1] += o.yaw.sin();
        centre[0] += o.position[0];
        centre[1] += o.position[1];
        count += 1;
    }
    if count == 0 {
        return (cruise, turn_bias);
    }
    let unit = |v: [f32; 2]| {
        let n = v[0].hypot(v[1]);
        if n > 1e-6 {
            [v[0] / n, v[1] / n]
        } else {
            [0.0, 0.0]
        }
    };
    let cohesion = unit([
        centre[0] / count as f32 - me.position[0],
        centre[1] / count as f32 - me.position[1],
    ]);
    let (sep, align) = (unit(sep), unit(align));
    let desired = [
        1.6 * sep[0] + 1.0 * align[0] + 0.7 * cohesion[0] + 0.8 * me.yaw.cos(),
        1.6 * sep[1] + 1.0 * align[1] + 0.7 * cohesion[1] + 0.8 * me.yaw.sin(),
    ];
    let target = desired[1].atan2(desired[0]);
    (cruise, steer_towards(me.yaw, target) + 0.3 * turn_bias)
}

/// Wedge behind the squad leader: slot `k` sits `ceil(k/2)` rows back, alternating sides.
fn formation(
    leader: &Agent,
    me: &Agent,
    slot: usize,
    b: &BehaviourConfig,
    cruise: f32,
) -> (f32, f32) {
    let spacing = b.formation_spacing_m as f32;
    let row = slot.div_ceil(2) as f32;
    let side = if slot % 2 == 1 { 1.0 } else { -1.0 };
    let offset = [-row * spacing, side * row * spacing * 0.8];
    let (c, s) = (leader.yaw.cos(), leader.yaw.sin());
    let target = [
        leader.position[0] + c * offset[0] - s * offset[1],
        leader.position[1] + s * offset[0] + c * offset[1],
    ];
    let (dx, dy) = (target[0] - me.position[0], target[1] - me.position[1]);
    let distance = dx.hypot(dy);
    if distance < 0.3 {
        // In the slot: match the leader.
        (leader.speed.max(0.0), steer_towards(me.yaw, leader.yaw))
    } else {
        let along = dx * me.yaw.cos() + dy * me.yaw.sin();
        let speed = (leader.speed + 0.8 * along).clamp(0.0, 1.5 * cruise);
        (speed, steer_towards(me.yaw, dy.atan2(dx)))
    }
}
