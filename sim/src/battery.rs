//! A lithium-ion pack: open-circuit voltage from state of charge, internal resistance sag,
//! coulomb counting, and the sense electronics' noise.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

pub(crate) const VOLTAGE_LSB: f64 = 0.001;
pub(crate) const VOLTAGE_NOISE_V: f64 = 0.004;
const CELLS: f64 = 4.0;
const CAPACITY_AH: f64 = 5.0;
const INTERNAL_OHM: f64 = 0.08;
/// Computer, sensors and radio.
const BASE_LOAD_A: f64 = 0.8;

pub(crate) struct Battery {
    state_of_charge: f64,
}

impl Battery {
    /// A pack charged to 70-100 %.
    pub fn charged(rng: &mut ChaCha8Rng) -> Battery {
        Battery {
            state_of_charge: rng.random_range(0.7..=1.0),
        }
    }

    /// Cell open-circuit voltage: a typical NMC curve, steep at both ends.
    fn cell_ocv(soc: f64) -> f64 {
        let soc = soc.clamp(0.0, 1.0);
        3.3 + 0.75 * soc + 0.12 * (1.0 - (-12.0 * soc).exp()) - 0.12 * (-(1.0 - soc) * 20.0).exp()
    }

    pub fn discharge(&mut self, motor_amps: f64, dt_s: f64) {
        let amps = motor_amps + BASE_LOAD_A;
        self.state_of_charge =
            (self.state_of_charge - amps * dt_s / (CAPACITY_AH * 3600.0)).max(0.0);
    }

    /// Terminal voltage and pack current, as the sense ADC reports them.
    pub fn measure(&self, motor_amps: f64, rng: &mut ChaCha8Rng) -> (f64, f64) {
        let amps = motor_amps + BASE_LOAD_A;
        let volts = CELLS * Self::cell_ocv(self.state_of_charge) - amps * INTERNAL_OHM;
        let noise: f64 = StandardNormal.sample(rng);
        let current_noise: f64 = StandardNormal.sample(rng);
        (volts + VOLTAGE_NOISE_V * noise, amps + 0.02 * current_noise)
    }
}
