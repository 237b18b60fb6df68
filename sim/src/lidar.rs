//! 2D lidar by Rapier ray casts, organised so that rays, not colliders, set the cost.
//!
//! One broad-phase query per scan collects the colliders within range; each collider's
//! bounding box gives the arc of beams that can hit it, and only those beams are cast against
//! that one shape. A beam's range is the nearest hit over the colliders whose arc holds it.

use std::f32::consts::{PI, TAU};

use rapier3d::parry::bounding_volume::Aabb;
use rapier3d::prelude::*;

/// Where the scanner sits and what it may ignore.
pub(crate) struct Mount {
    pub origin: Vector,
    pub forward: Vector,
    pub left: Vector,
    pub own_body: RigidBodyHandle,
    pub floor: ColliderHandle,
}

/// Fills `ranges` (one per beam, beam 0 straight ahead, counter-clockwise) with the true
/// distance to the nearest surface, or `f32::INFINITY` when nothing is within `max_range`.
pub(crate) fn scan(
    world: &PhysicsWorld,
    mount: &Mount,
    beams: usize,
    max_range: f32,
    ranges: &mut Vec<f32>,
) {
    ranges.clear();
    ranges.resize(beams, f32::INFINITY);
    let step = TAU / beams as f32;
    let o = mount.origin;
    let reach = Vector::new(max_range, 0.01, max_range);
    let filter = QueryFilter::default().exclude_rigid_body(mount.own_body);
    for (handle, collider) in
        world.intersect_aabb_conservative(Aabb::new(o - reach, o + reach), filter)
    {
        if handle == mount.floor {
            continue;
        }
        let aabb = collider.compute_aabb();
        if aabb.mins.y > o.y || aabb.maxs.y < o.y {
            continue;
        }
        let Some((first, count)) = beam_arc(&aabb, mount, step, beams) else {
            continue;
        };
        for k in 0..count {
            let beam = (first + k).rem_euclid(beams as i64) as usize;
            let angle = beam as f32 * step;
            let dir = mount.forward * angle.cos() + mount.left * angle.sin();
            let limit = ranges[beam].min(max_range);
            if let Some(toi) =
                collider
                    .shape()
                    .cast_ray(collider.position(), &Ray::new(o, dir), limit, true)
            {
                ranges[beam] = ranges[beam].min(toi);
            }
        }
    }
}

/// First beam index (possibly negative, wraps) and number of beams that can hit `aabb`.
fn beam_arc(aabb: &Aabb, mount: &Mount, step: f32, beams: usize) -> Option<(i64, i64)> {
    let o = mount.origin;
    let inside =
        (aabb.mins.x..=aabb.maxs.x).contains(&o.x) && (aabb.mins.z..=aabb.maxs.z).contains(&o.z);
    if inside {
        return Some((0, beams as i64));
    }
    let bearing = |x: f32, z: f32| {
        let v = Vector::new(x - o.x, 0.0, z - o.z);
        v.dot(mount.left).atan2(v.dot(mount.forward))
    };
    let centre = bearing(
        (aabb.mins.x + aabb.maxs.x) / 2.0,
        (aabb.mins.z + aabb.maxs.z) / 2.0,
    );
    let (mut lo, mut hi) = (0.0f32, 0.0f32);
    for (x, z) in [
        (aabb.mins.x, aabb.mins.z),
        (aabb.mins.x, aabb.maxs.z),
        (aabb.maxs.x, aabb.mins.z),
        (aabb.maxs.x, aabb.maxs.z),
    ] {
        let delta = (bearing(x, z) - centre + PI).rem_euclid(TAU) - PI;
        lo = lo.min(delta);
        hi = hi.max(delta);
    }
    let first = ((centre + lo) / step).floor() as i64;
    let last = ((centre + hi) / step).ceil() as i64;
    Some((first, (last - first + 1).min(beams as i64)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compares the culled scan with brute force: every beam cast through the query pipeline.
    #[test]
    fn culled_scan_equals_casting_every_beam() {
        let mut world = PhysicsWorld::default();
        let floor = world
            .insert(
                RigidBodyBuilder::fixed().translation(Vector::new(0.0, -0.5, 0.0)),
                ColliderBuilder::cuboid(20.0, 0.5, 20.0),
            )
            .1;
        for (x, z, shape) in [
            (3.0, 0.5, ColliderBuilder::cuboid(0.4, 0.5, 0.4)),
            (-2.0, -2.5, ColliderBuilder::cylinder(0.5, 0.6)),
            (0.0, 6.0, ColliderBuilder::cuboid(6.0, 0.5, 0.1)),
            (-0.6, 0.0, ColliderBuilder::cuboid(0.2, 0.5, 0.2)),
        ] {
            world.insert(
                RigidBodyBuilder::fixed().translation(Vector::new(x, 0.5, z)),
                shape,
            );
        }
        let own = world.insert(
            RigidBodyBuilder::dynamic().translation(Vector::new(0.0, 0.1, 0.0)),
            ColliderBuilder::cuboid(0.2, 0.08, 0.15),
        );
        world.step();
        let rotation = Rotation::from_rotation_y(0.7);
        let mount = Mount {
            origin: Vector::new(0.0, 0.1, 0.0),
            forward: rotation * Vector::X,
            left: rotation * Vector::NEG_Z,
            own_body: own.0,
            floor,
        };
        let (beams, max_range) = (360, 8.0);
        let mut ranges = Vec::new();
        scan(&world, &mount, beams, max_range, &mut ranges);
        let filter = QueryFilter::default()
            .exclude_rigid_body(own.0)
            .exclude_collider(floor);
        let mut hits = 0;
        for (beam, range) in ranges.iter().enumerate() {
            let angle = beam as f32 * TAU / beams as f32;
            let dir = mount.forward * angle.cos() + mount.left * angle.sin();
            let expected = world
                .cast_ray(&Ray::new(mount.origin, dir), max_range, true, filter)
                .map_or(f32::INFINITY, |(_, toi)| toi);
            assert!(
                (expected.is_infinite() && range.is_infinite()) || (expected - range).abs() < 1e-4,
                "beam {beam}: culled {range}, brute force {expected}"
            );
            hits += usize::from(range.is_finite());
        }
        assert!(hits > 60, "only {hits} beams hit anything");
    }
}
