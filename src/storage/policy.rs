//! The persisted rules as pure functions of the stored state and `now` (milliseconds).
//!
//! Send schedule: within one window a number gets a budget of codes (`register_per_number`,
//! 5 a day by default), waiting 1, 2, 5 and 10 minutes between them; once the budget is spent
//! it is locked until the window ends. All of it lives in the database, so a restart or an
//! operator's reset through `signal-gate admin` takes effect at once.
//! Wrong codes: a fixed budget per session and a fixed-window budget per number that spans every
//! session and every code, so asking for a new code never resets it.

use std::time::Duration;

use crate::limits::Rate;

/// A number's place in its send schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendState {
    pub window_start: u64,
    pub sends: u32,
    pub next_send_at: u64,
}

/// Why a number may not be sent a code now, and until when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendWait {
    /// Waiting between two codes.
    Cooldown { until: u64 },
    /// The window's budget is spent.
    WindowSpent { until: u64 },
}

impl SendWait {
    pub fn until(self) -> u64 {
        match self {
            SendWait::Cooldown { until } | SendWait::WindowSpent { until } => until,
        }
    }
}

/// The escalating waits between codes sent to one number.
#[derive(Clone, Debug)]
pub struct SendSchedule {
    delays_ms: Vec<u64>,
    window_ms: u64,
    budget: u32,
}

impl SendSchedule {
    /// `budget` codes per window, with `delays` between them; when there are fewer delays than
    /// gaps, the last delay repeats.
    pub fn new(delays: &[Duration], budget: Rate) -> SendSchedule {
        SendSchedule {
            delays_ms: delays.iter().map(|d| d.as_millis() as u64).collect(),
            window_ms: budget.period().as_millis() as u64,
            budget: budget.count(),
        }
    }

    /// `Ok(state after one more send)`, or why and until when the number must wait.
    pub fn decide(&self, state: Option<SendState>, now: u64) -> Result<SendState, SendWait> {
        let current = state.filter(|s| now < s.window_start + self.window_ms);
        let Some(current) = current else {
            return Ok(self.after_send(now, 1, now));
        };
        if now < current.next_send_at {
            let until = current.next_send_at;
            return Err(if current.sends >= self.budget {
                SendWait::WindowSpent { until }
            } else {
                SendWait::Cooldown { until }
            });
        }
        Ok(self.after_send(current.window_start, current.sends + 1, now))
    }

    fn after_send(&self, window_start: u64, sends: u32, now: u64) -> SendState {
        let window_end = window_start + self.window_ms;
        let delay = self
            .delays_ms
            .get(sends as usize - 1)
            .or(self.delays_ms.last());
        let next_send_at = match delay {
            _ if sends >= self.budget => window_end,
            Some(delay) => (now + delay).min(window_end),
            None => now,
        };
        SendState {
            window_start,
            sends,
            next_send_at,
        }
    }
}

/// A number's wrong codes in the current window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuessState {
    pub window_start: u64,
    pub count: u32,
}

/// Why a code may not be checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuessRefusal {
    /// The session has used its wrong codes; a new session is needed.
    SessionSpent,
    /// The number has used its wrong codes until the given time, whatever the session.
    NumberLocked { until: u64 },
}

/// The wrong-code budgets.
#[derive(Clone, Copy, Debug)]
pub struct GuessBudget {
    per_number: u32,
    window_ms: u64,
    per_session: u32,
}

impl GuessBudget {
    pub fn new(per_number: Rate, per_session: u32) -> GuessBudget {
        GuessBudget {
            per_number: per_number.count(),
            window_ms: per_number.period().as_millis() as u64,
            per_session,
        }
    }

    /// `Ok(number state after one more wrong code)` when a guess may be checked.
    pub fn decide(
        &self,
        number: Option<GuessState>,
        session_wrong_codes: u32,
        now: u64,
    ) -> Result<GuessState, GuessRefusal> {
        let current = number
            .filter(|s| now < s.window_start + self.window_ms)
            .unwrap_or(GuessState {
                window_start: now,
                count: 0,
            });
        if current.count >= self.per_number {
            return Err(GuessRefusal::NumberLocked {
                until: current.window_start + self.window_ms,
            });
        }
        if session_wrong_codes >= self.per_session {
            return Err(GuessRefusal::SessionSpent);
        }
        Ok(GuessState {
            count: current.count + 1,
            ..current
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_delay_repeats_when_the_budget_is_larger() {
        let hour = Rate::new(3, Duration::from_secs(3600));
        let schedule = SendSchedule::new(&[Duration::from_secs(60)], hour);
        let first = schedule.decide(None, 0).expect("open");
        let second = schedule.decide(Some(first), 60_000).expect("open");
        assert_eq!(second.next_send_at, 120_000);
        let third = schedule.decide(Some(second), 120_000).expect("open");
        assert_eq!(
            third.next_send_at, 3_600_000,
            "budget spent: locked to the window's end"
        );
    }

    #[test]
    fn without_delays_the_whole_budget_may_go_at_once() {
        let schedule = SendSchedule::new(&[], Rate::new(2, Duration::from_secs(3600)));
        let first = schedule.decide(None, 0).expect("open");
        let second = schedule
            .decide(Some(first), 0)
            .expect("no delay configured");
        assert!(
            schedule.decide(Some(second), 0).is_err(),
            "the budget still holds"
        );
    }

    const MIN: u64 = 60_000;
    const DAY: u64 = 24 * 60 * MIN;

    fn schedule() -> SendSchedule {
        let minutes = [1, 2, 5, 10].map(|m| Duration::from_secs(m * 60));
        SendSchedule::new(&minutes, Rate::new(5, Duration::from_secs(86_400)))
    }

    #[test]
    fn waits_escalate_then_lock_until_the_window_ends() {
        let schedule = schedule();
        let mut state = None;
        let mut now = 1_000;
        let mut waits = Vec::new();
        for _ in 0..5 {
            let next = schedule.decide(state, now).expect("slot open");
            waits.push((next.next_send_at - now) / MIN);
            let wait = schedule.decide(Some(next), now + 1).expect_err("a wait");
            assert_eq!(wait.until(), next.next_send_at);
            now = next.next_send_at;
            state = Some(next);
        }
        assert_eq!(&waits[..4], &[1, 2, 5, 10]);
        assert_eq!(
            state.map(|s| s.next_send_at),
            Some(1_000 + DAY),
            "locked for the day"
        );
        assert_eq!(
            schedule.decide(state, 1_000 + DAY).map(|s| s.sends),
            Ok(1),
            "new window"
        );
    }

    #[test]
    fn wrong_codes_count_across_sessions_until_the_window_ends() {
        let budget = GuessBudget::new(Rate::new(5, Duration::from_secs(3600)), 3);
        let mut number = None;
        for session_count in [0, 1, 2, 0, 1] {
            number = Some(
                budget
                    .decide(number, session_count, 0)
                    .expect("budget left"),
            );
        }
        let until = 3_600_000;
        assert_eq!(
            budget.decide(number, 0, 10),
            Err(GuessRefusal::NumberLocked { until })
        );
        assert_eq!(budget.decide(number, 0, until).map(|s| s.count), Ok(1));
        assert_eq!(budget.decide(None, 3, 0), Err(GuessRefusal::SessionSpent));
    }
}
