//! Where to put a new MIG GPU instance. Pure logic on each GPU's occupied memory slices; the
//! backends own the actual state.
//!
//! The rules (mig-notes §2): an instance sits on one of its profile's placements, must not overlap
//! memory slices held by another instance, and a GPU holds at most `max_instances` of a profile.
//! Those rules also keep the compute slices within the GPU's total.

use super::catalog::{Model, Profile};

/// One GPU instance on a GPU.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placed {
    pub profile: &'static Profile,
    pub start: u32,
}

/// One GPU's instances.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub model: &'static Model,
    pub placed: Vec<Placed>,
}

/// A placement chosen for a request: which GPU (index into the slice given), which profile of
/// that GPU's model the request resolved to, and the first memory slice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    pub gpu: usize,
    pub profile: &'static Profile,
    pub start: u32,
}

/// Room left for each compute size: index `8 - compute_slices` holds how many instances of the
/// plain profile of that size could still be created, so comparing arrays compares the largest
/// sizes first.
pub type Room = [u32; 8];

impl Layout {
    pub fn new(model: &'static Model) -> Layout {
        Layout { model, placed: Vec::new() }
    }

    /// Occupied memory slices as a bit mask.
    pub fn occupied(&self) -> u32 {
        self.placed.iter().fold(0, |m, p| m | p.profile.mask(p.start))
    }

    /// Instances of `profile` on this GPU.
    pub fn count(&self, profile: &Profile) -> u32 {
        self.placed.iter().filter(|p| p.profile.name == profile.name).count() as u32
    }

    /// Whether `profile` may be created at `start` now.
    pub fn fits(&self, profile: &Profile, start: u32) -> bool {
        profile.placements.iter().any(|p| p.start == start)
            && self.count(profile) < profile.max_instances
            && self.occupied() & profile.mask(start) == 0
    }

    /// First slices of the placements where `profile` may be created now, lowest first.
    pub fn free_starts(&self, profile: &Profile) -> Vec<u32> {
        if self.count(profile) >= profile.max_instances {
            return Vec::new();
        }
        let occupied = self.occupied();
        profile.placements.iter().filter(|p| occupied & profile.mask(p.start) == 0).map(|p| p.start).collect()
    }

    /// Adds an instance; false (and no change) where it does not fit.
    pub fn place(&mut self, profile: &'static Profile, start: u32) -> bool {
        if !self.fits(profile, start) {
            return false;
        }
        self.placed.push(Placed { profile, start });
        true
    }

    /// Removes the instance of `profile` at `start`; false where there is none.
    pub fn remove(&mut self, profile: &Profile, start: u32) -> bool {
        match self.placed.iter().position(|p| p.profile.name == profile.name && p.start == start) {
            Some(i) => {
                self.placed.remove(i);
                true
            }
            None => false,
        }
    }

    /// How many more of each plain profile could be created, each counted on its own. A
    /// profile's placements never overlap each other, so the count is the free placements,
    /// capped by the instances still allowed.
    pub fn room(&self) -> Room {
        let mut room = [0; 8];
        let occupied = self.occupied();
        for p in self.model.plain_profiles() {
            let free = p.placements.iter().filter(|pl| occupied & p.mask(pl.start) == 0).count() as u32;
            let allowed = p.max_instances.saturating_sub(self.count(p));
            room[8 - p.compute_slices.min(8) as usize] += free.min(allowed);
        }
        room
    }
}

/// The profile `request` (a name or an `Ng` shorthand) means on this GPU, if any.
fn resolve(layout: &Layout, request: &str) -> Option<&'static Profile> {
    layout.model.resolve(request).ok()
}

/// The baseline: the lowest free placement on the lowest GPU that has one.
pub fn lowest(gpus: &[Layout], request: &str) -> Option<Choice> {
    gpus.iter().enumerate().find_map(|(gpu, layout)| {
        let profile = resolve(layout, request)?;
        let start = *layout.free_starts(profile).first()?;
        Some(Choice { gpu, profile, start })
    })
}

/// sandman's policy: of all free placements on all GPUs, the one that leaves the host the most
/// room for large instances. Each candidate is scored by the host's room after placing it
/// (how many 7g could still be created, then 4g, then 3g, ...), so small instances go where
/// they break the fewest large placements: into GPUs already split, and into the corners of a
/// GPU that large profiles cannot use anyway. Ties go to the lowest GPU, then the lowest start.
pub fn choose(gpus: &[Layout], request: &str) -> Option<Choice> {
    ranked(gpus, request).into_iter().next()
}

/// Every free placement for `request`, in `choose`'s order of preference: the next ones are
/// where to try when the driver refuses the first (an instance made outside sandman meanwhile).
pub fn ranked(gpus: &[Layout], request: &str) -> Vec<Choice> {
    let rooms: Vec<Room> = gpus.iter().map(Layout::room).collect();
    let total = rooms.iter().fold([0; 8], |acc, r| add(acc, *r));
    let mut scored: Vec<(Room, Choice)> = Vec::new();
    for (gpu, layout) in gpus.iter().enumerate() {
        let Some(profile) = resolve(layout, request) else {
            continue;
        };
        for start in layout.free_starts(profile) {
            let mut after = layout.clone();
            after.placed.push(Placed { profile, start });
            // Only this GPU's room changes.
            let score = add(sub(total, rooms[gpu]), after.room());
            scored.push((score, Choice { gpu, profile, start }));
        }
    }
    // Stable: ties keep the earlier (lower GPU, lower start) candidate first.
    scored.sort_by_key(|s| std::cmp::Reverse(s.0));
    scored.into_iter().map(|(_, c)| c).collect()
}

fn add(a: Room, b: Room) -> Room {
    std::array::from_fn(|i| a[i] + b[i])
}

fn sub(a: Room, b: Room) -> Room {
    std::array::from_fn(|i| a[i] - b[i])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::catalog::model;

    fn a100() -> &'static Model {
        model("NVIDIA A100-SXM4-40GB").unwrap()
    }

    fn p(name: &str) -> &'static Profile {
        a100().profile(name).unwrap()
    }

    /// A layout built from (profile, start) pairs, each of which must fit.
    fn layout(instances: &[(&str, u32)]) -> Layout {
        let mut l = Layout::new(a100());
        for &(name, start) in instances {
            assert!(l.place(p(name), start), "{name}@{start} in {instances:?}");
        }
        l
    }

    #[test]
    fn the_guide_example_geometries_are_reachable() {
        // MIG guide examples on A100-40GB (mig-notes §2.8).
        layout(&[("4g.20gb", 0), ("2g.10gb", 4), ("1g.5gb", 6)]);
        layout(&[("1g.5gb", 0), ("1g.5gb", 1), ("2g.10gb", 2), ("3g.20gb", 4)]);
        layout(&[("1g.5gb", 0), ("1g.5gb", 1), ("1g.5gb", 2), ("1g.5gb", 3), ("2g.10gb", 4), ("1g.5gb", 6)]);
        layout(&[("3g.20gb", 0), ("3g.20gb", 4)]);
        layout(&[("7g.40gb", 0)]);
        // 4g@0 + 3g@4: refused before R510, allowed since.
        layout(&[("4g.20gb", 0), ("3g.20gb", 4)]);
    }

    #[test]
    fn overlap_is_refused() {
        let mut l = layout(&[("3g.20gb", 4)]);
        assert!(!l.place(p("1g.5gb"), 5));
        assert!(!l.place(p("2g.10gb"), 4));
        assert!(!l.place(p("7g.40gb"), 0));
        assert!(!l.place(p("1g.10gb"), 6));
        assert_eq!(l.free_starts(p("2g.10gb")), vec![0, 2]);
        assert_eq!(l.free_starts(p("1g.10gb")), vec![0, 2]);
        // Only placements of the profile itself are allowed.
        assert!(!l.place(p("2g.10gb"), 1));
        assert!(!l.place(p("3g.20gb"), 2));
        assert_eq!(l.placed.len(), 1);
    }

    #[test]
    fn max_instances_are_refused() {
        let mut l = layout(&[("1g.5gb+me", 0)]);
        // One +me per GPU, though slices 1..7 are free.
        assert!(!l.fits(p("1g.5gb+me"), 1));
        assert!(l.free_starts(p("1g.5gb+me")).is_empty());
        assert!(l.place(p("1g.5gb"), 1));
        // Seven plain 1g at most; the eighth slice is never a 1g placement.
        let mut l = Layout::new(a100());
        for start in 0..7 {
            assert!(l.place(p("1g.5gb"), start));
        }
        assert!(l.free_starts(p("1g.5gb")).is_empty());
        assert!(!l.place(p("1g.10gb"), 6));
    }

    #[test]
    fn room_counts_what_could_still_be_created() {
        let empty = Layout::new(a100()).room();
        // 7g, 4g, 3g, 2g, 1g of an empty A100.
        assert_eq!([empty[1], empty[4], empty[5], empty[6], empty[7]], [1, 1, 2, 3, 7]);
        let l = layout(&[("3g.20gb", 4)]);
        let r = l.room();
        assert_eq!([r[1], r[4], r[5], r[6], r[7]], [0, 1, 1, 2, 4]);
    }

    #[test]
    fn lowest_takes_the_first_free_placement() {
        let gpus = vec![layout(&[("3g.20gb", 0)]), Layout::new(a100())];
        let c = lowest(&gpus, "1g").unwrap();
        assert_eq!((c.gpu, c.start, c.profile.name), (0, 4, "1g.5gb"));
        let c = lowest(&gpus, "4g").unwrap();
        assert_eq!((c.gpu, c.start), (1, 0));
        assert!(lowest(&gpus, "8g").is_none());
        assert!(lowest(&gpus[..1], "7g").is_none());
    }

    #[test]
    fn choose_keeps_large_profiles_placeable_where_lowest_does_not() {
        // GPU 0 holds a 3g at 4: its 4g (slices 0-3) is still possible. GPU 1 holds a 2g at 0.
        // A 1g placed by `lowest` goes to GPU 0 slice 0 and kills that 4g; `choose` puts it
        // beside the 2g on GPU 1, where no 4g or 7g was possible anyway.
        let gpus = vec![layout(&[("3g.20gb", 4)]), layout(&[("2g.10gb", 0)])];
        let low = lowest(&gpus, "1g").unwrap();
        assert_eq!((low.gpu, low.start), (0, 0));
        let best = choose(&gpus, "1g").unwrap();
        assert_eq!(best.gpu, 1);

        let place = |c: Choice| {
            let mut g = gpus.clone();
            assert!(g[c.gpu].place(c.profile, c.start));
            g
        };
        let after_low = place(low);
        let after_best = place(best);
        assert!(lowest(&after_low, "4g").is_none());
        assert!(lowest(&after_best, "4g").is_some());
        // And on an empty host, small instances stay off a second GPU, keeping its 7g.
        let mut host = vec![Layout::new(a100()), Layout::new(a100())];
        for _ in 0..4 {
            let c = choose(&host, "1g").unwrap();
            assert!(host[c.gpu].place(c.profile, c.start));
        }
        assert!(host[1].placed.is_empty());
        // On GPU 0 they fill slices 4-6 first, keeping its 4g while they can.
        let mut starts: Vec<u32> = host[0].placed.iter().map(|p| p.start).collect();
        starts.sort();
        assert_eq!(starts, vec![0, 4, 5, 6]);
    }

    #[test]
    fn ranked_lists_every_free_placement_best_first() {
        let gpus = vec![layout(&[("3g.20gb", 4)]), layout(&[("2g.10gb", 0)])];
        let all = ranked(&gpus, "1g");
        assert_eq!(all[0], choose(&gpus, "1g").unwrap());
        // GPU 0 has slices 0-3 free, GPU 1 slices 2-6: nine 1g placements in all.
        assert_eq!(all.len(), 9);
        let mut seen: Vec<(usize, u32)> = all.iter().map(|c| (c.gpu, c.start)).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 9, "each placement once");
    }

    #[test]
    fn choose_puts_a_3g_beside_a_4g() {
        let gpus = vec![Layout::new(a100()), layout(&[("4g.20gb", 0)])];
        let c = choose(&gpus, "3g").unwrap();
        assert_eq!((c.gpu, c.start), (1, 4));
        // Alone on an empty GPU a 3g takes the upper half, leaving the 4g placement.
        let c = choose(&gpus[..1], "3g").unwrap();
        assert_eq!(c.start, 4);
    }

    #[test]
    fn choose_resolves_per_model() {
        let h100 = model("NVIDIA H100 80GB HBM3").unwrap();
        let gpus = vec![layout(&[("7g.40gb", 0)]), Layout::new(h100)];
        let c = choose(&gpus, "3g").unwrap();
        assert_eq!((c.gpu, c.profile.name), (1, "3g.40gb"));
        assert!(choose(&gpus, "3g.20gb").is_none());
    }
}
