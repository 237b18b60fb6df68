//! The world plugin: the Rapier physics world as a resource, the arena, and the step.

use bevy::app::{App, Plugin, Update};
use bevy::ecs::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rapier3d::prelude::*;

use crate::SimConfig;
use crate::config::ObstacleShape;

/// Every physics object of the simulation. Rapier's pipeline stages stay explicit in
/// [`PhysicsWorld`]; Bevy systems reach them through this resource.
#[derive(Resource)]
pub(crate) struct Physics {
    pub world: PhysicsWorld,
}

/// Integer step counter: timestamps are `step * step_ns`, exact for any run length.
#[derive(Resource, Default)]
pub(crate) struct SimClock {
    pub step: u64,
    pub step_ns: i64,
}

impl SimClock {
    pub fn time_ns(&self) -> i64 {
        self.step as i64 * self.step_ns
    }

    pub fn dt(&self) -> f32 {
        self.step_ns as f32 * 1e-9
    }
}

/// Spawn area the robots may start in, kept clear of obstacles.
#[derive(Resource, Clone)]
pub(crate) struct Arena {
    pub half_x: f32,
    pub half_y: f32,
    pub spawn_points: Vec<(f32, f32)>,
    /// The floor: sensors that look sideways skip it.
    pub ground: ColliderHandle,
}

/// Schedule sets of one physics step, in order.
#[derive(SystemSet, Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum StepSet {
    Decide,
    Actuate,
    Integrate,
    Sense,
}

pub(crate) struct WorldPlugin {
    config: SimConfig,
}

impl WorldPlugin {
    pub fn new(config: &SimConfig) -> Self {
        Self {
            config: config.clone(),
        }
    }
}

impl Plugin for WorldPlugin {
    fn build(&self, app: &mut App) {
        let (world, arena) = build_arena(&self.config);
        app.insert_resource(Physics { world })
            .insert_resource(arena)
            .insert_resource(SimClock {
                step: 0,
                step_ns: self.config.step_ns(),
            })
            .configure_sets(
                Update,
                (
                    StepSet::Decide,
                    StepSet::Actuate,
                    StepSet::Integrate,
                    StepSet::Sense,
                )
                    .chain(),
            )
            .add_systems(Update, step_physics.in_set(StepSet::Integrate));
    }
}

fn step_physics(mut physics: ResMut<Physics>, mut clock: ResMut<SimClock>) {
    physics.world.step();
    clock.step += 1;
}

/// Builds the ground, the walls and seeded random obstacles, and picks spawn points clear of
/// them on a grid.
fn build_arena(config: &SimConfig) -> (PhysicsWorld, Arena) {
    let mut world = PhysicsWorld::default();
    world.integration_parameters.dt = (1.0 / config.physics_hz()) as f32;
    let a = &config.arena;
    let (half_x, half_y) = (a.size_m[0] as f32 / 2.0, a.size_m[1] as f32 / 2.0);
    let wall_h = a.wall_height_m as f32 / 2.0;
    let t = 0.1;

    let fixed = |world: &mut PhysicsWorld, x: f32, y: f32, z: f32, shape: ColliderBuilder| {
        world
            .insert(
                RigidBodyBuilder::fixed().translation(Vector::new(x, y, z)),
                shape.friction(0.6).restitution(0.3),
            )
            .1
    };
    let ground = fixed(
        &mut world,
        0.0,
        -0.5,
        0.0,
        ColliderBuilder::cuboid(half_x + 1.0, 0.5, half_y + 1.0),
    );
    if a.walls {
        fixed(
            &mut world,
            half_x + t,
            wall_h,
            0.0,
            ColliderBuilder::cuboid(t, wall_h, half_y + 2.0 * t),
        );
        fixed(
            &mut world,
            -half_x - t,
            wall_h,
            0.0,
            ColliderBuilder::cuboid(t, wall_h, half_y + 2.0 * t),
        );
        fixed(
            &mut world,
            0.0,
            wall_h,
            half_y + t,
            ColliderBuilder::cuboid(half_x + 2.0 * t, wall_h, t),
        );
        fixed(
            &mut world,
            0.0,
            wall_h,
            -half_y - t,
            ColliderBuilder::cuboid(half_x + 2.0 * t, wall_h, t),
        );
    }

    // Arena (x, y) maps to Rapier (x, -z): y points left of x, up is Rapier's +y.
    let mut obstacles: Vec<(f32, f32, f32)> = Vec::new();
    let mut add_obstacle =
        |world: &mut PhysicsWorld, shape: ObstacleShape, x: f32, y: f32, size: f32| {
            let collider = match shape {
                ObstacleShape::Box => ColliderBuilder::cuboid(size, wall_h, size),
                // A vertical capsule: a round post wherever a robot can touch it, with parry's
                // analytic ray cast (a cylinder's goes through GJK, several times slower).
                ObstacleShape::Cylinder => ColliderBuilder::capsule_y(wall_h, size),
            };
            fixed(world, x, wall_h, -y, collider);
            obstacles.push((x, y, size * std::f32::consts::SQRT_2));
        };
    for o in &a.placed {
        add_obstacle(&mut world, o.shape, o.x as f32, o.y as f32, o.size_m as f32);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0xa7e4_a000);
    let [min_size, max_size] = a.obstacle_size_m.map(|v| v as f32);
    for _ in 0..a.obstacles {
        let size = rng.random_range(min_size..=max_size);
        let x = rng.random_range(-half_x + size + 0.5..=half_x - size - 0.5);
        let y = rng.random_range(-half_y + size + 0.5..=half_y - size - 0.5);
        let shape = if rng.random_bool(0.5) {
            ObstacleShape::Box
        } else {
            ObstacleShape::Cylinder
        };
        add_obstacle(&mut world, shape, x, y, size);
    }

    let clearance = config.robots.body_m[0].max(config.robots.body_m[1]) as f32;
    let spacing = clearance * 2.5;
    let mut spawn_points = Vec::new();
    let mut y = -half_y + spacing;
    while y < half_y - spacing / 2.0 {
        let mut x = -half_x + spacing;
        while x < half_x - spacing / 2.0 {
            let clear = obstacles
                .iter()
                .all(|&(ox, oy, r)| (x - ox).hypot(y - oy) > r + clearance);
            if clear {
                spawn_points.push((x, y));
            }
            x += spacing;
        }
        y += spacing;
    }
    (
        world,
        Arena {
            half_x,
            half_y,
            spawn_points,
            ground,
        },
    )
}
