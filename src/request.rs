//! Scatter-gather: [`ctx::request`](crate::ctx::request) sends a request event and gathers the
//! typed responses that name it; [`ctx::respond`](crate::ctx::respond) answers in one line.
//!
//! Design: a request travels as an ordinary event [`Request<Q>`] carrying a process-unique
//! [`RequestId`]; answers travel as [`Response<R>`] events carrying that id and the responder's
//! name. The requester subscribes to `Response<R>` *before* sending, keeps only its own id (so
//! concurrent requests never see each other's answers) and counts each responder once (first
//! answer wins).

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;

use crate::event::Envelope;
use crate::spawn::TaskHandle;
use crate::{SendErrorKind, ctx};

/// A process-unique request identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(u64);

impl RequestId {
    fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// The identifier as a number.
    pub fn get(self) -> u64 {
        self.0
    }
}

/// A request event, as responders receive it: dereferences to the request body `Q`.
#[derive(Debug)]
pub struct Request<Q> {
    id: RequestId,
    body: Q,
}

impl<Q> Request<Q> {
    /// The request's id, to put in a [`Response`] (see [`Request::reply`]).
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// Answers this request on the current scope's bus as `responder`; returns what became of
    /// the response ([`Sent::Delivered`](crate::Sent::Delivered)`(0)` if the request has already
    /// completed or timed out).
    ///
    /// # Panics
    ///
    /// Outside of a scope.
    #[track_caller]
    pub fn reply<R: Send + Sync + 'static>(
        &self,
        responder: impl Into<Arc<str>>,
        body: R,
    ) -> crate::Sent {
        ctx::send(Response {
            request: self.id,
            responder: responder.into(),
            body,
        })
    }
}

impl<Q> Deref for Request<Q> {
    type Target = Q;
    fn deref(&self) -> &Q {
        &self.body
    }
}

/// One answer to a request: dereferences to the response body `R`.
#[derive(Debug)]
pub struct Response<R> {
    request: RequestId,
    responder: Arc<str>,
    body: R,
}

impl<R> Response<R> {
    /// The request this answers.
    pub fn request(&self) -> RequestId {
        self.request
    }

    /// Who answered.
    pub fn responder(&self) -> &str {
        &self.responder
    }
}

impl<R> Deref for Response<R> {
    type Target = R;
    fn deref(&self) -> &R {
        &self.body
    }
}

/// Options of a [`ctx::request`](crate::ctx::request).
///
/// - `timeout`: how long to gather (default 10 s);
/// - `expect(names)`: the responders that count. **Empty (the default) means "collect every
///   answer until the timeout"**: the request then always runs for the full timeout and
///   returns what came;
/// - `min_responses(n)`: complete as soon as `n` expected responders answered (default: all
///   of them);
/// - `count_unexpected()`: let answers from responders not in the list count towards the
///   minimum (they are always kept in the result).
#[derive(Debug, Clone)]
pub struct RequestOptions {
    timeout: Duration,
    expected: Vec<Arc<str>>,
    min: Option<usize>,
    count_unexpected: bool,
}

impl Default for RequestOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            expected: Vec::new(),
            min: None,
            count_unexpected: false,
        }
    }
}

impl RequestOptions {
    /// The default options (10 s, collect until the timeout).
    pub fn new() -> Self {
        Self::default()
    }

    /// How long to gather.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The responders expected to answer.
    pub fn expect<S: Into<Arc<str>>>(mut self, responders: impl IntoIterator<Item = S>) -> Self {
        self.expected = responders.into_iter().map(Into::into).collect();
        self
    }

    /// Complete once this many (counting) responders have answered.
    pub fn min_responses(mut self, min: usize) -> Self {
        self.min = Some(min);
        self
    }

    /// Count answers of responders outside the expected list towards the minimum.
    pub fn count_unexpected(mut self) -> Self {
        self.count_unexpected = true;
        self
    }

    fn validate(&self) -> Result<usize, String> {
        let unique: HashSet<&str> = self.expected.iter().map(|s| &**s).collect();
        if unique.len() != self.expected.len() {
            return Err("the expected responder list names a responder twice".into());
        }
        let min = self.min.unwrap_or(self.expected.len());
        if self.min == Some(0) {
            return Err("`min_responses(0)` would complete before anyone answers".into());
        }
        if min > self.expected.len() && !self.count_unexpected && !self.expected.is_empty() {
            return Err(format!(
                "`min_responses({min})` is more than the {} expected responders",
                self.expected.len()
            ));
        }
        if self.expected.is_empty() && self.min.is_some() && !self.count_unexpected {
            return Err(
                "`min_responses` without `expect(..)` needs `count_unexpected()`: no answer would count"
                    .into(),
            );
        }
        Ok(min)
    }
}

/// What a request gathered, in arrival order, one per responder.
pub type Responses<R> = Vec<Envelope<Response<R>>>;

/// Why a [`ctx::request`](crate::ctx::request) did not complete.
#[non_exhaustive]
pub enum RequestError<R> {
    /// The options contradict each other (nothing was sent).
    Invalid(String),
    /// No scope is current, or the bus is closed (nothing was sent).
    NotSent(SendErrorKind),
    /// The timeout passed before enough responders answered: what did arrive, and who did not
    /// answer of the expected.
    TimedOut {
        /// The answers that arrived.
        partial: Responses<R>,
        /// Expected responders that did not answer.
        missing: Vec<Arc<str>>,
    },
}

impl<R> fmt::Debug for RequestError<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Invalid(why) => f.debug_tuple("Invalid").field(why).finish(),
            RequestError::NotSent(kind) => f.debug_tuple("NotSent").field(kind).finish(),
            RequestError::TimedOut { partial, missing } => f
                .debug_struct("TimedOut")
                .field("answers", &partial.len())
                .field("missing", missing)
                .finish(),
        }
    }
}

impl<R> fmt::Display for RequestError<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Invalid(why) => write!(f, "invalid request options: {why}"),
            RequestError::NotSent(kind) => write!(f, "request not sent: {kind:?}"),
            RequestError::TimedOut { partial, missing } => write!(
                f,
                "request timed out with {} answers; missing: {}",
                partial.len(),
                missing.iter().map(|s| &**s).collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

impl<R> std::error::Error for RequestError<R> {}

/// Sends `request` and gathers the typed answers to it (scatter-gather): see
/// [`RequestOptions`] for the timeout, the expected responders and the minimum.
///
/// Responders receive a [`Request<Q>`](crate::Request) event (it dereferences to `Q`) and
/// answer with [`respond`](crate::ctx::respond) or [`Request::reply`](crate::Request::reply). The type of the
/// answers, `R`, is named at the call: `ctx::request::<_, bool>(..)`. Only answers to *this*
/// request are gathered; each responder counts once (its first answer).
///
/// # Errors
///
/// [`RequestError::Invalid`] for contradictory options,
/// [`RequestError::NotSent`] outside a scope or on a closed bus,
/// [`RequestError::TimedOut`] with the partial answers and the
/// missing responders.
///
/// # Cancel safety
///
/// Dropping the future abandons the request: later answers are dropped with the subscription.
///
/// ```
/// use scopebus::{ctx, RequestOptions};
///
/// struct Validate(&'static str);
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// ctx::scope("app").run(async {
///     ctx::respond::<Validate>("syntax").answer(|req| async move { !req.0.is_empty() });
///     ctx::respond::<Validate>("length").answer(|req| async move { req.0.len() < 10 });
///     let answers = ctx::request::<_, bool>(
///         Validate("config"),
///         RequestOptions::new().expect(["syntax", "length"]),
///     ).await.unwrap();
///     assert_eq!(answers.len(), 2);
///     assert!(answers.iter().all(|a| **a.event()));
/// }).await;
/// # }
/// ```
pub async fn request<Q, R>(
    body: Q,
    options: RequestOptions,
) -> Result<Responses<R>, RequestError<R>>
where
    Q: Send + Sync + 'static,
    R: Send + Sync + 'static,
{
    let min = options.validate().map_err(RequestError::Invalid)?;
    // Subscribe before sending, so that no answer can be missed.
    let mut answers = ctx::try_subscribe::<Response<R>>()
        .map_err(|_| RequestError::NotSent(SendErrorKind::NoScope))?;
    let id = RequestId::next();
    ctx::try_send(Request { id, body }).map_err(|e| RequestError::NotSent(e.kind()))?;

    // `None`: no minimum (no expected list, no `min_responses`) — collect until the timeout.
    let needed = (!options.expected.is_empty() || options.min.is_some()).then_some(min);
    let expected: HashSet<&str> = options.expected.iter().map(|s| &**s).collect();
    let mut seen: HashSet<Arc<str>> = HashSet::new();
    let mut responses = Vec::new();
    let mut counted = 0;
    let gather = async {
        while let Some(answer) = answers.next().await {
            if answer.request != id || !seen.insert(answer.responder.clone()) {
                continue; // someone else's request, or a responder answering twice
            }
            if expected.contains(&*answer.responder) || options.count_unexpected {
                counted += 1;
            }
            responses.push(answer);
            if needed.is_some_and(|needed| counted >= needed) {
                return true;
            }
        }
        false // the bus closed
    };
    let complete = tokio::time::timeout(options.timeout, gather)
        .await
        .unwrap_or(false);
    if complete || needed.is_none() {
        return Ok(responses);
    }
    let missing = options
        .expected
        .iter()
        .filter(|name| !seen.contains(&***name))
        .cloned()
        .collect();
    Err(RequestError::TimedOut {
        partial: responses,
        missing,
    })
}

/// A responder being set up: made by [`ctx::respond`](crate::ctx::respond), started by
/// [`answer`](Responder::answer).
#[must_use = "a responder does nothing until `answer` is called"]
pub struct Responder<Q> {
    name: Arc<str>,
    _request: std::marker::PhantomData<fn(Q)>,
}

impl<Q: Send + Sync + 'static> Responder<Q> {
    pub(crate) fn new(name: Arc<str>) -> Self {
        Self {
            name,
            _request: std::marker::PhantomData,
        }
    }

    /// Answers every request of type `Q` on the current scope's bus with `handler`: subscribes
    /// at once (so requests sent right after are answered), then runs as a task of the current
    /// scope until the subscription ends (when the scope's body completes).
    ///
    /// # Panics
    ///
    /// Outside of a scope or a tokio runtime.
    #[track_caller]
    pub fn answer<R, F, Fut>(self, mut handler: F) -> TaskHandle<()>
    where
        R: Send + Sync + 'static,
        F: FnMut(Envelope<Request<Q>>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + Send,
    {
        let mut requests = ctx::subscribe::<Request<Q>>();
        let name = self.name;
        ctx::spawn(async move {
            while let Some(request) = requests.next().await {
                let id = request.id;
                let body = handler(request).await;
                ctx::send(Response {
                    request: id,
                    responder: name.clone(),
                    body,
                });
            }
        })
    }
}

impl<Q> fmt::Debug for Responder<Q> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("name", &self.name)
            .field("request", &std::any::type_name::<Q>())
            .finish()
    }
}

/// A responder named `name` for requests of type `Q`; start it with
/// [`Responder::answer`]:
/// `ctx::respond::<Validate>("syntax").answer(|req| async move { .. })`.
pub fn respond<Q: Send + Sync + 'static>(name: impl Into<Arc<str>>) -> Responder<Q> {
    Responder::new(name.into())
}
