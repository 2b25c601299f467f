//! How much of an endpoint's allowance one worker may lease and send at once. Pure arithmetic,
//! shared by the claim (sql/src/claim.sql calls it as `webhooks_internal._lease_quota` and
//! `_lease_room`) and the dispatcher's cap (src/worker/senders.rs), so that both split an endpoint the
//! same way between the workers of a database.

/// Which worker is asking: `rank` among the `workers` of its database (0..workers, by pid).
#[derive(Clone, Copy, Debug)]
pub struct Worker {
    pub workers: u32,
    pub rank: u32,
}

/// Worker `rank`'s part (of `workers`, ranked 0..workers) of `total`. The parts add up to
/// `total` exactly: a `max_in_flight` of 1 shared by two workers is one request at a time, not
/// one each. Which workers get the remainder depends on `key` (the endpoint), so that endpoints
/// with small caps spread over the workers instead of all landing on the first.
pub fn part(total: u32, workers: u32, rank: u32, key: &str) -> u32 {
    let w = workers.max(1);
    let offset = fnv1a(key.as_bytes()) % w;
    let pos = (rank % w + w - offset) % w;
    total / w + u32::from(pos < total % w)
}

/// The rows an endpoint may have leased from one worker (queued there or in flight): that
/// worker's part of `max_in_flight` (no more than its senders) times the rounds it leases
/// ahead, four times as many for an endpoint that answers fast. A batch is one request: a
/// batched endpoint may have its part of `max_in_flight` full batches, not leased further
/// ahead, and never more than 1,000 rows (their bodies wait in the worker's memory).
pub fn quota(
    max_in_flight: u32,
    batch_max: u32,
    senders: u32,
    ahead: u32,
    fast: bool,
    me: Worker,
    endpoint: &str,
) -> u32 {
    let mine = part(max_in_flight, me.workers, me.rank, endpoint).min(senders);
    if batch_max > 1 {
        (mine * batch_max).min(1000)
    } else {
        mine * if fast { 4 * ahead } else { ahead }
    }
}

/// How many more rows of an endpoint this worker may take, given its quota, the endpoint's
/// rows in flight over every worker (`busy`) and those this worker holds (`mine`). With one
/// worker the table's count is the truth; with several, each counts its own against its part.
pub fn room(quota: i64, busy: i64, mine: i64, workers: u32) -> i64 {
    if workers > 1 {
        quota - mine
    } else {
        quota - busy
    }
}

/// FNV-1a: a stable hash of a key (the same in every process and version, unlike std's).
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_add_up_to_the_total_for_any_split() {
        for total in 0..40 {
            for workers in 1..6 {
                for key in ["ep_a", "ep_b", "ep_01J", ""] {
                    let sum: u32 = (0..workers).map(|r| part(total, workers, r, key)).sum();
                    assert_eq!(sum, total, "total {total}, workers {workers}, key {key}");
                }
            }
        }
    }

    #[test]
    fn a_cap_below_the_workers_is_held_exactly() {
        // max_in_flight 1 with two workers: one of them may send, the other none.
        let parts: Vec<u32> = (0..2).map(|r| part(1, 2, r, "ep_x")).collect();
        assert_eq!(parts.iter().sum::<u32>(), 1);
        assert!(parts.contains(&0));
        // and endpoints with a cap of 1 do not all go to the same worker
        let firsts = (0..64)
            .filter(|i| part(1, 2, 0, &format!("ep_{i}")) == 1)
            .count();
        assert!(firsts > 10 && firsts < 54, "{firsts} of 64 on worker 0");
    }

    #[test]
    fn quotas_follow_the_part_in_flight() {
        assert_eq!(
            quota(
                32,
                1,
                64,
                4,
                false,
                Worker {
                    workers: 1,
                    rank: 0
                },
                "e"
            ),
            128
        );
        assert_eq!(
            quota(
                32,
                1,
                64,
                4,
                true,
                Worker {
                    workers: 1,
                    rank: 0
                },
                "e"
            ),
            512
        );
        assert_eq!(
            quota(
                32,
                1,
                16,
                4,
                false,
                Worker {
                    workers: 1,
                    rank: 0
                },
                "e"
            ),
            64,
            "no more than the senders"
        );
        assert_eq!(
            quota(
                32,
                1,
                64,
                4,
                false,
                Worker {
                    workers: 2,
                    rank: 0
                },
                "e"
            ),
            64,
            "half of it each"
        );
        assert_eq!(
            quota(
                4,
                100,
                64,
                4,
                true,
                Worker {
                    workers: 1,
                    rank: 0
                },
                "e"
            ),
            400,
            "full batches, not ahead"
        );
        assert_eq!(
            quota(
                32,
                1000,
                64,
                4,
                false,
                Worker {
                    workers: 1,
                    rank: 0
                },
                "e"
            ),
            1000
        );
        let q: Vec<u32> = (0..2)
            .map(|r| {
                quota(
                    1,
                    1,
                    64,
                    4,
                    false,
                    Worker {
                        workers: 2,
                        rank: r,
                    },
                    "e",
                )
            })
            .collect();
        assert_eq!(q.iter().filter(|q| **q == 0).count(), 1, "{q:?}");
    }

    #[test]
    fn room_counts_what_each_worker_holds() {
        assert_eq!(room(128, 100, 0, 1), 28);
        assert_eq!(room(64, 100, 10, 2), 54);
        assert_eq!(room(0, 0, 0, 2), 0);
    }
}
