//! The retrieval menu as a sans-IO state machine: access code, "message from …", the
//! audio, then 1 replay, 7 delete, 9 save, # next; and at any point 5, the recipient's own
//! greeting (docs/sip.md, "Retrieval menu"): recorded after the tone until # or the limit,
//! played back, then 1 (or hanging up) keeps it, 2 records again, 3 removes it. It knows
//! nothing of SIP or RTP: the driver plays what it asks for, records when told, reports
//! when a sequence finished or a digit came, and carries out the changes it requests.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use boxless_core::PhoneNumber;

/// One message the caller may hear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MenuMessage {
    /// Store id.
    pub id: String,
    /// Who left it.
    pub caller: Option<PhoneNumber>,
    /// When (ms since the epoch).
    pub received_at_ms: u64,
    /// Its access code (never logged).
    pub access_code: String,
}

/// Something to play.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// "Please enter your access code, then pound."
    EnterCode,
    /// "That code is not right."
    WrongCode,
    /// "Too many wrong codes. Try again later."
    LockedOut,
    /// "There are no messages for you on this number."
    NoMessages,
    /// "Message from \<digits\>, received \<date, time\>."
    MessageFrom {
        /// The caller, if known.
        caller: Option<PhoneNumber>,
        /// When it was received.
        received_at_ms: u64,
    },
    /// The message's audio.
    Audio(String),
    /// "Press 1 to replay, 7 to delete, 9 to save, pound for the next message."
    Options,
    /// "Message deleted."
    Deleted,
    /// "Message saved."
    Saved,
    /// "No more messages."
    NoMore,
    /// "Goodbye."
    Goodbye,
    /// "After the tone, record your greeting. Press pound when you are done.", the tone.
    GreetingRecord,
    /// "This is your greeting."
    GreetingIs,
    /// What the caller just recorded.
    RecordedGreeting,
    /// "To keep it, press 1 or hang up. To record it again, press 2. To remove it, press 3."
    GreetingOptions,
    /// "Your greeting is saved."
    GreetingSaved,
    /// "Your greeting is removed."
    GreetingRemoved,
    /// "Your greeting can only be changed from your own phone."
    OwnPhoneOnly,
}

/// What a message became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Played to the end: communicated.
    Heard,
    /// Kept.
    Saved,
    /// Deleted.
    Deleted,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Stop whatever plays and play this sequence; report [`Menu::played`] when done.
    Play(Vec<Prompt>),
    /// Record a state change in the store.
    Mark {
        /// Message id.
        id: String,
        /// New state.
        mark: Mark,
    },
    /// A wrong access code from this caller (the driver counts it towards the lockout).
    WrongCode,
    /// Record what the caller says from now on, at most `max`.
    StartRecording {
        /// The limit (`messages.greeting_max_seconds`).
        max: Duration,
    },
    /// Stop recording; keep what was recorded to play back.
    StopRecording,
    /// What was recorded is `owner`'s greeting from now on.
    KeepGreeting {
        /// Whose.
        owner: PhoneNumber,
    },
    /// `owner` has no greeting of their own any more.
    RemoveGreeting {
        /// Whose.
        owner: PhoneNumber,
    },
    /// End the call.
    Hangup,
}

/// Timers and limits of the menu.
#[derive(Debug, Clone)]
pub struct MenuSettings {
    /// How long to wait for a key after a question.
    pub answer_timeout: Duration,
    /// Times a question is repeated after silence before goodbye.
    pub repeats: u32,
    /// Wrong codes before lockout.
    pub max_wrong_codes: u32,
    /// Digits of an access code.
    pub code_len: usize,
    /// Whose greeting this call may record: the caller's, when its caller-ID is trusted as
    /// the recipient's (docs/sip.md); None: 5 is answered "only from your own phone".
    pub greeting_owner: Option<PhoneNumber>,
    /// The longest greeting recorded.
    pub greeting_max: Duration,
}

impl Default for MenuSettings {
    fn default() -> Self {
        MenuSettings {
            answer_timeout: Duration::from_secs(6),
            repeats: 2,
            max_wrong_codes: 3,
            code_len: 6,
            greeting_owner: None,
            greeting_max: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Collecting an access code.
    Code { entered: String },
    /// Playing message i (header, audio, options); `audio_done` once the audio ended.
    Playing { i: usize },
    /// Options played, waiting for a key for message i.
    Waiting { i: usize },
    /// Saying something, then going to message `next` (or ending).
    Interlude { next: usize },
    /// Saying goodbye.
    Ending,
    /// Saying "record after the tone"; then back to message `back` (None: goodbye).
    GreetingPrompt { back: Option<usize> },
    /// Recording the greeting until # or the limit.
    GreetingRecording { back: Option<usize> },
    /// Playing it back and asking 1, 2 or 3.
    GreetingReview { back: Option<usize> },
    /// Done.
    Over,
}

/// The menu of one retrieval call.
#[derive(Debug)]
pub struct Menu {
    s: MenuSettings,
    messages: Vec<MenuMessage>,
    state: State,
    out: VecDeque<Action>,
    deadline: Option<Instant>,
    silences: u32,
    wrong: u32,
    audio_playing: bool,
}

impl Menu {
    /// Starts the menu. `messages` are those of (link number, caller-ID) when the caller is
    /// the recipient, else every unheard message on the link number; `code_required`
    /// follows the access-code policy; `locked` when this caller is locked out.
    pub fn new(
        s: MenuSettings,
        messages: Vec<MenuMessage>,
        code_required: bool,
        locked: bool,
    ) -> Menu {
        let mut m = Menu {
            s,
            messages,
            state: State::Over,
            out: VecDeque::new(),
            deadline: None,
            silences: 0,
            wrong: 0,
            audio_playing: false,
        };
        if locked {
            m.end(vec![Prompt::LockedOut, Prompt::Goodbye]);
        } else if m.messages.is_empty() {
            m.end(vec![Prompt::NoMessages, Prompt::Goodbye]);
        } else if code_required {
            m.state = State::Code {
                entered: String::new(),
            };
            m.play(vec![Prompt::EnterCode]);
        } else {
            m.present(0);
        }
        m
    }

    /// The next action.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.out.pop_front()
    }

    /// When [`Menu::handle_timeout`] wants to run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// True once the menu has nothing more to do.
    pub fn is_over(&self) -> bool {
        self.state == State::Over
    }

    fn play(&mut self, p: Vec<Prompt>) {
        self.audio_playing = p.iter().any(|x| matches!(x, Prompt::Audio(_)));
        self.deadline = None;
        self.out.push_back(Action::Play(p));
    }

    fn end(&mut self, p: Vec<Prompt>) {
        self.state = State::Ending;
        self.play(p);
    }

    fn present(&mut self, i: usize) {
        let Some(m) = self.messages.get(i) else {
            self.end(vec![Prompt::NoMore, Prompt::Goodbye]);
            return;
        };
        let seq = vec![
            Prompt::MessageFrom {
                caller: m.caller,
                received_at_ms: m.received_at_ms,
            },
            Prompt::Audio(m.id.clone()),
            Prompt::Options,
        ];
        self.state = State::Playing { i };
        self.silences = 0;
        self.play(seq);
    }

    /// The audio of the current sequence reached its end (the message was heard through).
    pub fn audio_finished(&mut self) {
        if let State::Playing { i } = self.state
            && self.audio_playing
        {
            self.audio_playing = false;
            let id = self.messages[i].id.clone();
            self.out.push_back(Action::Mark {
                id,
                mark: Mark::Heard,
            });
        }
    }

    /// The whole sequence asked for last finished playing.
    pub fn played(&mut self, now: Instant) {
        match self.state.clone() {
            State::Code { .. } => self.deadline = Some(now + self.s.answer_timeout),
            State::Playing { i } => {
                self.state = State::Waiting { i };
                self.deadline = Some(now + self.s.answer_timeout);
            }
            State::Interlude { next } => self.present(next),
            State::GreetingPrompt { back } => {
                self.state = State::GreetingRecording { back };
                self.out.push_back(Action::StartRecording {
                    max: self.s.greeting_max,
                });
                self.deadline = Some(now + self.s.greeting_max);
            }
            State::GreetingReview { .. } => self.deadline = Some(now + self.s.answer_timeout),
            State::Ending => {
                self.state = State::Over;
                self.deadline = None;
                self.out.push_back(Action::Hangup);
            }
            State::Waiting { .. } | State::Over | State::GreetingRecording { .. } => {}
        }
    }

    /// A key (RFC 4733 or in-band); keys pressed during prompts act at once.
    pub fn digit(&mut self, now: Instant, d: char) {
        if d == '5' {
            let back = match self.state {
                State::Playing { i } | State::Waiting { i } => Some(Some(i)),
                State::Interlude { next } => Some(Some(next)),
                // "No messages" or "no more", then goodbye: 5 still works.
                State::Ending => Some(None),
                _ => None,
            };
            if let Some(back) = back {
                self.greeting(back);
                return;
            }
        }
        match self.state.clone() {
            State::Code { mut entered } => {
                if d == '#' || d == '*' {
                    if entered.is_empty() {
                        return;
                    }
                } else if d.is_ascii_digit() {
                    entered.push(d);
                    if entered.len() < self.s.code_len {
                        self.state = State::Code { entered };
                        self.deadline = Some(now + self.s.answer_timeout);
                        return;
                    }
                } else {
                    return;
                }
                self.check_code(now, &entered);
            }
            State::Playing { i } | State::Waiting { i } => self.choose(i, d),
            State::GreetingRecording { back } if d == '#' => self.review(back),
            State::GreetingReview { back } => self.decide(back, d),
            State::Interlude { .. }
            | State::Ending
            | State::Over
            | State::GreetingPrompt { .. }
            | State::GreetingRecording { .. } => {}
        }
    }

    /// 5: the greeting, for its owner; anyone else hears why not and goes back.
    fn greeting(&mut self, back: Option<usize>) {
        if self.s.greeting_owner.is_none() {
            self.resume(back, Prompt::OwnPhoneOnly);
            return;
        }
        self.state = State::GreetingPrompt { back };
        self.silences = 0;
        self.play(vec![Prompt::GreetingRecord]);
    }

    /// After a greeting's step: message `back` again, or goodbye when there is none.
    fn resume(&mut self, back: Option<usize>, said: Prompt) {
        match back {
            Some(next) => {
                self.state = State::Interlude { next };
                self.play(vec![said]);
            }
            None => self.end(vec![said, Prompt::Goodbye]),
        }
    }

    /// # or the limit: the recording ends and plays back.
    fn review(&mut self, back: Option<usize>) {
        self.out.push_back(Action::StopRecording);
        self.state = State::GreetingReview { back };
        self.silences = 0;
        self.play(vec![
            Prompt::GreetingIs,
            Prompt::RecordedGreeting,
            Prompt::GreetingOptions,
        ]);
    }

    /// 1 keeps, 2 records again, 3 removes; another key asks again.
    fn decide(&mut self, back: Option<usize>, d: char) {
        let Some(owner) = self.s.greeting_owner else {
            return;
        };
        match d {
            '1' => {
                self.out.push_back(Action::KeepGreeting { owner });
                self.resume(back, Prompt::GreetingSaved);
            }
            '2' => self.greeting(back),
            '3' => {
                self.out.push_back(Action::RemoveGreeting { owner });
                self.resume(back, Prompt::GreetingRemoved);
            }
            _ => self.play(vec![Prompt::GreetingOptions]),
        }
    }

    /// The caller hung up: a greeting recorded and not yet decided on is kept, as
    /// hanging up is one of the ways to keep it.
    pub fn hung_up(&mut self) {
        let Some(owner) = self.s.greeting_owner else {
            return;
        };
        match self.state {
            State::GreetingRecording { .. } => {
                self.out.push_back(Action::StopRecording);
                self.out.push_back(Action::KeepGreeting { owner });
            }
            State::GreetingReview { .. } => self.out.push_back(Action::KeepGreeting { owner }),
            _ => return,
        }
        self.state = State::Over;
        self.deadline = None;
    }

    fn check_code(&mut self, _now: Instant, entered: &str) {
        let keep: Vec<MenuMessage> = self
            .messages
            .iter()
            .filter(|m| constant_time_eq(m.access_code.as_bytes(), entered.as_bytes()))
            .cloned()
            .collect();
        if keep.is_empty() {
            self.wrong += 1;
            self.out.push_back(Action::WrongCode);
            if self.wrong >= self.s.max_wrong_codes {
                self.end(vec![Prompt::WrongCode, Prompt::LockedOut, Prompt::Goodbye]);
            } else {
                self.state = State::Code {
                    entered: String::new(),
                };
                self.silences = 0;
                self.play(vec![Prompt::WrongCode, Prompt::EnterCode]);
            }
            return;
        }
        self.messages = keep;
        self.present(0);
    }

    fn choose(&mut self, i: usize, d: char) {
        let id = self.messages[i].id.clone();
        match d {
            '1' => self.present(i),
            '7' => {
                self.out.push_back(Action::Mark {
                    id,
                    mark: Mark::Deleted,
                });
                self.state = State::Interlude { next: i + 1 };
                self.play(vec![Prompt::Deleted]);
            }
            '9' => {
                self.out.push_back(Action::Mark {
                    id,
                    mark: Mark::Saved,
                });
                self.state = State::Interlude { next: i + 1 };
                self.play(vec![Prompt::Saved]);
            }
            '#' => self.present(i + 1),
            _ => {
                if let State::Waiting { .. } = self.state {
                    self.state = State::Playing { i };
                    self.audio_playing = false;
                    self.out.push_back(Action::Play(vec![Prompt::Options]));
                    self.deadline = None;
                }
            }
        }
    }

    /// The link number was locked (too many wrong codes on it, from any caller) while this
    /// caller was still to enter a code: no code opens it now, the right one neither.
    pub fn lock_out(&mut self) {
        if let State::Code { .. } = self.state {
            self.end(vec![Prompt::LockedOut, Prompt::Goodbye]);
        }
    }

    /// Runs a due timer: silence after a question repeats it, then says goodbye.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_none_or(|d| now < d) {
            return;
        }
        self.deadline = None;
        if let State::GreetingRecording { back } = self.state {
            // The limit: what was said so far is the greeting to review.
            self.review(back);
            return;
        }
        self.silences += 1;
        if self.silences > self.s.repeats {
            if let (State::GreetingReview { .. }, Some(owner)) =
                (&self.state, self.s.greeting_owner)
            {
                // No answer is as hanging up: the greeting is kept.
                self.out.push_back(Action::KeepGreeting { owner });
                self.end(vec![Prompt::GreetingSaved, Prompt::Goodbye]);
                return;
            }
            self.end(vec![Prompt::Goodbye]);
            return;
        }
        match self.state.clone() {
            State::Code { .. } => {
                self.state = State::Code {
                    entered: String::new(),
                };
                self.play(vec![Prompt::EnterCode]);
            }
            State::Waiting { i } => {
                self.state = State::Playing { i };
                self.audio_playing = false;
                self.out.push_back(Action::Play(vec![Prompt::Options]));
            }
            State::GreetingReview { .. } => {
                self.out
                    .push_back(Action::Play(vec![Prompt::GreetingOptions]));
            }
            _ => {}
        }
    }
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(n: usize) -> Vec<MenuMessage> {
        (0..n)
            .map(|i| MenuMessage {
                id: format!("ms1-{i}"),
                caller: PhoneNumber::parse_e164("+15551230001"),
                received_at_ms: 1_000 * i as u64,
                access_code: format!("12345{i}"),
            })
            .collect()
    }

    struct H {
        now: Instant,
        m: Menu,
        log: Vec<Action>,
    }

    impl H {
        fn new(n: usize, code: bool, locked: bool) -> H {
            H::with(n, code, locked, MenuSettings::default())
        }
        fn with(n: usize, code: bool, locked: bool, s: MenuSettings) -> H {
            let now = Instant::now();
            let mut h = H {
                now,
                m: Menu::new(s, msgs(n), code, locked),
                log: Vec::new(),
            };
            h.drain();
            h
        }
        fn drain(&mut self) {
            while let Some(a) = self.m.poll_action() {
                self.log.push(a);
            }
        }
        fn key(&mut self, k: &str) {
            for c in k.chars() {
                self.m.digit(self.now, c);
                self.drain();
            }
        }
        fn done(&mut self) {
            self.m.played(self.now);
            self.drain();
        }
        fn wait(&mut self, d: Duration) {
            self.now += d;
            self.m.handle_timeout(self.now);
            self.drain();
        }
        fn last_play(&self) -> Vec<Prompt> {
            self.log
                .iter()
                .rev()
                .find_map(|a| {
                    if let Action::Play(p) = a {
                        Some(p.clone())
                    } else {
                        None
                    }
                })
                .unwrap()
        }
        fn marks(&self) -> Vec<(String, Mark)> {
            self.log
                .iter()
                .filter_map(|a| {
                    if let Action::Mark { id, mark } = a {
                        Some((id.clone(), *mark))
                    } else {
                        None
                    }
                })
                .collect()
        }
    }

    fn owner() -> PhoneNumber {
        PhoneNumber::parse_e164("+15551230002").unwrap()
    }

    fn owned(n: usize) -> H {
        H::with(
            n,
            false,
            false,
            MenuSettings {
                greeting_owner: Some(owner()),
                greeting_max: Duration::from_secs(30),
                ..MenuSettings::default()
            },
        )
    }

    /// The greeting actions taken so far, as words.
    fn greeting_log(h: &H) -> Vec<&'static str> {
        h.log
            .iter()
            .filter_map(|a| match a {
                Action::StartRecording { .. } => Some("start"),
                Action::StopRecording => Some("stop"),
                Action::KeepGreeting { owner: o } if *o == owner() => Some("keep"),
                Action::RemoveGreeting { owner: o } if *o == owner() => Some("remove"),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn five_records_a_greeting_plays_it_back_and_one_keeps_it() {
        let mut h = owned(2);
        h.key("5");
        assert_eq!(h.last_play(), [Prompt::GreetingRecord]);
        assert!(
            greeting_log(&h).is_empty(),
            "recording starts after the tone"
        );
        h.done();
        assert_eq!(greeting_log(&h), ["start"]);
        h.key("7"); // keys other than # are part of what is said
        assert!(h.marks().is_empty());
        h.key("#");
        assert_eq!(greeting_log(&h), ["start", "stop"]);
        assert_eq!(
            h.last_play(),
            [
                Prompt::GreetingIs,
                Prompt::RecordedGreeting,
                Prompt::GreetingOptions
            ]
        );
        h.key("1");
        assert_eq!(greeting_log(&h), ["start", "stop", "keep"]);
        assert_eq!(h.last_play(), [Prompt::GreetingSaved]);
        h.done();
        assert!(
            matches!(h.last_play()[0], Prompt::MessageFrom { .. }),
            "back to the message it left"
        );
    }

    #[test]
    fn two_records_again_three_removes_and_hanging_up_keeps() {
        let mut h = owned(1);
        h.key("5");
        h.done();
        h.key("#2");
        assert_eq!(h.last_play(), [Prompt::GreetingRecord], "again");
        h.done();
        h.key("#3");
        assert_eq!(
            greeting_log(&h),
            ["start", "stop", "start", "stop", "remove"]
        );
        assert_eq!(h.last_play(), [Prompt::GreetingRemoved]);

        // Hanging up while it records, or while it plays back, keeps it.
        let mut h = owned(1);
        h.key("5");
        h.done();
        h.m.hung_up();
        h.drain();
        assert_eq!(greeting_log(&h), ["start", "stop", "keep"]);
        let mut h = owned(1);
        h.key("5");
        h.done();
        h.key("#");
        h.m.hung_up();
        h.drain();
        assert_eq!(greeting_log(&h), ["start", "stop", "keep"]);
        // Not while it only asks to record: nothing was said yet.
        let mut h = owned(1);
        h.key("5");
        h.m.hung_up();
        h.drain();
        assert!(greeting_log(&h).is_empty());
    }

    #[test]
    fn the_limit_ends_a_recording_and_silence_at_the_question_keeps_it() {
        let mut h = owned(1);
        h.key("5");
        h.done();
        h.wait(Duration::from_secs(29));
        assert_eq!(greeting_log(&h), ["start"]);
        h.wait(Duration::from_secs(1));
        assert_eq!(greeting_log(&h), ["start", "stop"], "stopped at 30 s");
        h.done();
        for _ in 0..2 {
            h.wait(Duration::from_secs(6));
            assert_eq!(h.last_play(), [Prompt::GreetingOptions], "asked again");
            h.done();
        }
        h.wait(Duration::from_secs(6));
        assert_eq!(greeting_log(&h), ["start", "stop", "keep"]);
        assert_eq!(h.last_play(), [Prompt::GreetingSaved, Prompt::Goodbye]);
    }

    #[test]
    fn five_from_a_phone_that_is_not_the_recipient_s_is_refused() {
        // A caller who gave the access code.
        let mut h = H::new(1, true, false);
        h.key("123450");
        assert!(matches!(h.last_play()[0], Prompt::MessageFrom { .. }));
        h.key("5");
        assert_eq!(h.last_play(), [Prompt::OwnPhoneOnly]);
        assert!(greeting_log(&h).is_empty());
        h.done();
        assert!(matches!(h.last_play()[0], Prompt::MessageFrom { .. }));
        // No messages on the link: 5 during "no messages, goodbye" works for the owner.
        let mut h = owned(0);
        h.key("5");
        assert_eq!(h.last_play(), [Prompt::GreetingRecord]);
        h.done();
        h.key("#1");
        assert_eq!(h.last_play(), [Prompt::GreetingSaved, Prompt::Goodbye]);
    }

    #[test]
    fn heard_to_the_end_then_save_delete_next() {
        let mut h = H::new(3, false, false);
        assert!(matches!(h.last_play()[0], Prompt::MessageFrom { .. }));
        assert_eq!(h.last_play()[1], Prompt::Audio("ms1-0".into()));
        h.m.audio_finished();
        h.drain();
        h.done();
        h.key("9");
        assert_eq!(h.last_play(), [Prompt::Saved]);
        h.done();
        assert_eq!(h.last_play()[1], Prompt::Audio("ms1-1".into()));
        // Delete during playback: never heard through, so not marked heard.
        h.key("7");
        h.done();
        h.key("#");
        assert_eq!(h.last_play(), [Prompt::NoMore, Prompt::Goodbye]);
        h.done();
        assert_eq!(h.log.last(), Some(&Action::Hangup));
        assert_eq!(
            h.marks(),
            [
                ("ms1-0".into(), Mark::Heard),
                ("ms1-0".into(), Mark::Saved),
                ("ms1-1".into(), Mark::Deleted)
            ]
        );
        assert!(h.m.is_over());
    }

    #[test]
    fn one_replays() {
        let mut h = H::new(1, false, false);
        h.done();
        h.key("1");
        assert_eq!(h.last_play()[1], Prompt::Audio("ms1-0".into()));
    }

    #[test]
    fn silence_repeats_the_options_twice_then_goodbye() {
        let mut h = H::new(1, false, false);
        h.done();
        for _ in 0..2 {
            h.wait(Duration::from_secs(7));
            assert_eq!(h.last_play(), [Prompt::Options]);
            h.done();
        }
        h.wait(Duration::from_secs(7));
        assert_eq!(h.last_play(), [Prompt::Goodbye]);
        h.done();
        assert_eq!(h.log.last(), Some(&Action::Hangup));
    }

    #[test]
    fn access_code_right_wrong_and_lockout() {
        let mut h = H::new(2, true, false);
        assert_eq!(h.last_play(), [Prompt::EnterCode]);
        h.done();
        h.key("123451");
        assert_eq!(
            h.last_play()[1],
            Prompt::Audio("ms1-1".into()),
            "only the message of that code"
        );
        let mut h = H::new(2, true, false);
        h.done();
        h.key("999999");
        assert_eq!(h.last_play(), [Prompt::WrongCode, Prompt::EnterCode]);
        h.done();
        h.key("000#");
        h.done();
        h.key("111111");
        assert_eq!(
            h.last_play(),
            [Prompt::WrongCode, Prompt::LockedOut, Prompt::Goodbye]
        );
        assert_eq!(h.log.iter().filter(|a| **a == Action::WrongCode).count(), 3);
        assert!(!h.log.iter().any(|a| matches!(a, Action::Play(p) if p.iter().any(|x| matches!(x, Prompt::Audio(_) | Prompt::MessageFrom { .. })))));
        let h = H::new(2, true, true);
        assert_eq!(h.last_play(), [Prompt::LockedOut, Prompt::Goodbye]);
    }

    #[test]
    fn no_messages_and_digit_floods() {
        let h = H::new(0, false, false);
        assert_eq!(h.last_play(), [Prompt::NoMessages, Prompt::Goodbye]);
        let mut h = H::new(2, false, false);
        h.key(&"4".repeat(1000));
        assert!(h.log.len() < 1010);
        h.key("#");
        assert_eq!(h.last_play()[1], Prompt::Audio("ms1-1".into()));
    }

    #[test]
    fn a_link_locked_while_entering_a_code_refuses_even_the_right_one() {
        let mut h = H::new(1, true, false);
        h.key("9");
        h.m.lock_out();
        h.drain();
        assert_eq!(h.last_play(), vec![Prompt::LockedOut, Prompt::Goodbye]);
        h.key("123450");
        h.drain();
        assert!(h.marks().is_empty(), "nothing played or marked");
        // Past the code, a lock changes nothing.
        let mut h = H::new(1, false, false);
        h.m.lock_out();
        h.drain();
        assert_ne!(h.last_play(), vec![Prompt::LockedOut, Prompt::Goodbye]);
    }

    #[test]
    fn codes_compare_whole() {
        assert!(constant_time_eq(b"123456", b"123456"));
        assert!(!constant_time_eq(b"123456", b"123457"));
        assert!(!constant_time_eq(b"12345", b"123456"));
    }
}
