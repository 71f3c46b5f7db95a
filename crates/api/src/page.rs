//! The web playback pages, as text: no I/O, no framework, no external asset.
//!
//! Every page is one HTML document with its style (and, on the message page, a few lines
//! of script) inline; the Content-Security-Policy allows exactly those by their SHA-256,
//! so nothing injected could run. Playing needs no script: the `<audio>` element plays
//! the file itself; the script only reports "played to the end" (heard).

use std::sync::LazyLock;

use base64::Engine as _;
use boxless_core::PhoneNumber;
use boxless_core::recipient::Language;
use sha2::{Digest, Sha256};

const STYLE: &str = "\
:root{color-scheme:light dark;--fg:#111;--bg:#fff;--mute:#4a4a4a;--line:#c8c8c8;--go:#0b57d0;--stop:#b3261e}\
@media(prefers-color-scheme:dark){:root{--fg:#f2f2f2;--bg:#161616;--mute:#c4c4c4;--line:#555;--go:#7cacf8;--stop:#f2b8b5}}\
*{box-sizing:border-box}\
body{margin:0;font:1.0625rem/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:var(--fg);background:var(--bg)}\
main{max-width:34rem;margin:0 auto;padding:1.25rem 1rem 2rem}\
h1{font-size:1.5rem;margin:0 0 1rem}\
dl{display:grid;grid-template-columns:auto 1fr;gap:.25rem 1rem;margin:0 0 1.25rem}\
dt{color:var(--mute)}dd{margin:0;font-weight:600;overflow-wrap:anywhere}\
audio{width:100%;margin:0 0 1.25rem}\
.row{display:flex;flex-wrap:wrap;gap:.75rem;margin:0 0 1.25rem}\
form{margin:0}\
button{font:inherit;font-weight:600;min-height:48px;min-width:8rem;padding:.5rem 1.25rem;border-radius:.5rem;border:2px solid var(--go);color:#fff;background:var(--go);cursor:pointer}\
@media(prefers-color-scheme:dark){button{color:#111}}\
button.stop{border-color:var(--stop);background:var(--stop)}\
button.plain{color:var(--fg);background:transparent;border-color:var(--line)}\
button:focus-visible,a:focus-visible{outline:3px solid var(--fg);outline-offset:3px}\
a{color:var(--go)}\
.note{color:var(--mute);font-size:.9375rem}\
.done{padding:.5rem .75rem;border-left:4px solid var(--go);margin:0 0 1.25rem}\
h2{font-size:1.125rem;margin:1.5rem 0 .5rem}\
input[type=file]{display:block;max-width:100%;margin:.25rem 0 .75rem}";

const SCRIPT: &str = "\
(function(){var a=document.getElementById('player');if(!a)return;\
var s=a.getAttribute('src');a.src=s+'?via=page';\
a.addEventListener('ended',function(){\
fetch(s.replace(/audio$/,'heard'),{method:'POST',keepalive:true,credentials:'omit'});});})();\
(function(){var g=document.getElementById('greeting');\
if(!g||!window.MediaRecorder||!navigator.mediaDevices||!window.AudioContext)return;\
var f=g.querySelector('form[enctype]'),b=document.createElement('button'),o=document.createElement('p'),r=null,c=[],t=0;\
b.type='button';b.id='greeting-record';b.className='plain';b.textContent=g.dataset.record;o.id='greeting-outcome';\
function wav(a){var d=a.getChannelData(0),n=d.length,h=a.sampleRate,v=new DataView(new ArrayBuffer(44+2*n));\
function w(i,x){for(var k=0;k<4;k++)v.setUint8(i+k,x.charCodeAt(k));}\
w(0,'RIFF');v.setUint32(4,36+2*n,true);w(8,'WAVE');w(12,'fmt ');v.setUint32(16,16,true);v.setUint16(20,1,true);\
v.setUint16(22,1,true);v.setUint32(24,h,true);v.setUint32(28,2*h,true);v.setUint16(32,2,true);v.setUint16(34,16,true);\
w(36,'data');v.setUint32(40,2*n,true);\
for(var i=0;i<n;i++)v.setInt16(44+2*i,Math.max(-1,Math.min(1,d[i]))*32767,true);return v.buffer;}\
function up(blob){b.disabled=true;blob.arrayBuffer().then(function(x){return new AudioContext().decodeAudioData(x);})\
.then(function(a){return fetch(f.getAttribute('action'),{method:'POST',body:wav(a),headers:{'Content-Type':'audio/wav'},credentials:'omit'});})\
.then(function(x){if(x.ok){location.reload();return;}return x.text().then(function(h){\
var q=new DOMParser().parseFromString(h,'text/html').querySelector('p');o.textContent=q?q.textContent:String(x.status);b.disabled=false;});})\
.catch(function(e){o.textContent=String(e);b.disabled=false;});}\
b.addEventListener('click',function(){if(r){clearTimeout(t);r.stop();return;}\
navigator.mediaDevices.getUserMedia({audio:true}).then(function(m){c=[];r=new MediaRecorder(m);\
r.ondataavailable=function(e){c.push(e.data);};\
r.onstop=function(){m.getTracks().forEach(function(k){k.stop();});r=null;b.textContent=g.dataset.record;up(new Blob(c));};\
r.start();b.textContent=g.dataset.stop;t=setTimeout(function(){if(r)r.stop();},1000*g.dataset.max);})\
.catch(function(e){o.textContent=String(e);});});\
g.appendChild(b);g.appendChild(o);})();";

pub(crate) fn sha256_b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(s.as_bytes()))
}

/// The pages' Content-Security-Policy: nothing but this style, this script, audio and
/// forms from the same origin; no framing, no `<base>`.
pub(crate) static CSP: LazyLock<String> = LazyLock::new(|| {
    format!(
        "default-src 'none'; style-src 'sha256-{}'; script-src 'sha256-{}'; media-src 'self'; \
         connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        sha256_b64(STYLE),
        sha256_b64(SCRIPT)
    )
});

/// Words of the message page, per language.
struct Words {
    title: &'static str,
    from: &'static str,
    received: &'static str,
    length: &'static str,
    unknown: &'static str,
    play: &'static str,
    no_audio: &'static str,
    download: &'static str,
    save: &'static str,
    delete: &'static str,
    saved: &'static str,
    by_phone: &'static str,
    ask: &'static str,
    yes: &'static str,
    keep: &'static str,
    deleted: &'static str,
    transcript: &'static str,
    greeting: &'static str,
    greeting_none: &'static str,
    greeting_file: &'static str,
    greeting_upload: &'static str,
    greeting_remove: &'static str,
    greeting_record: &'static str,
    greeting_stop: &'static str,
    greeting_refused: &'static str,
    back: &'static str,
}

fn words(lang: Language) -> &'static Words {
    match lang {
        Language::En => &Words {
            title: "Voice message",
            from: "From",
            received: "Received",
            length: "Length",
            unknown: "Unknown number",
            play: "Play the message",
            no_audio: "This browser cannot play the message here:",
            download: "download it",
            save: "Save",
            delete: "Delete",
            saved: "Saved: it is kept until you delete it.",
            by_phone: "You can also listen by phone: call",
            ask: "Delete this message for good?",
            yes: "Delete",
            keep: "Keep it",
            deleted: "The message is deleted.",
            transcript: "What was said (automatic transcript, may contain errors)",
            greeting: "Your greeting",
            greeting_none: "Callers hear the standard greeting.",
            greeting_file: "A new greeting from a WAV file:",
            greeting_upload: "Upload",
            greeting_remove: "Remove",
            greeting_record: "Record it here",
            greeting_stop: "Stop and keep it",
            greeting_refused: "This file cannot be your greeting",
            back: "Back to the message",
        },
        Language::Fr => &Words {
            title: "Message vocal",
            from: "De",
            received: "Reçu",
            length: "Durée",
            unknown: "Numéro inconnu",
            play: "Écouter le message",
            no_audio: "Ce navigateur ne peut pas lire le message ici :",
            download: "le télécharger",
            save: "Garder",
            delete: "Supprimer",
            saved: "Gardé : il est conservé jusqu'à ce que vous le supprimiez.",
            by_phone: "Vous pouvez aussi l'écouter par téléphone : appelez le",
            ask: "Supprimer définitivement ce message ?",
            yes: "Supprimer",
            keep: "Le garder",
            deleted: "Le message est supprimé.",
            transcript: "Ce qui a été dit (transcription automatique, peut contenir des erreurs)",
            greeting: "Votre annonce",
            greeting_none: "Vos correspondants entendent l'annonce standard.",
            greeting_file: "Une nouvelle annonce depuis un fichier WAV :",
            greeting_upload: "Envoyer",
            greeting_remove: "Supprimer",
            greeting_record: "L'enregistrer ici",
            greeting_stop: "Arrêter et garder",
            greeting_refused: "Ce fichier ne peut pas être votre annonce",
            back: "Retour au message",
        },
        Language::Es => &Words {
            title: "Mensaje de voz",
            from: "De",
            received: "Recibido",
            length: "Duración",
            unknown: "Número desconocido",
            play: "Escuchar el mensaje",
            no_audio: "Este navegador no puede reproducir el mensaje aquí:",
            download: "descárguelo",
            save: "Guardar",
            delete: "Borrar",
            saved: "Guardado: se conserva hasta que lo borre.",
            by_phone: "También puede escucharlo por teléfono: llame al",
            ask: "¿Borrar este mensaje para siempre?",
            yes: "Borrar",
            keep: "Conservarlo",
            deleted: "El mensaje está borrado.",
            transcript: "Lo que se dijo (transcripción automática, puede contener errores)",
            greeting: "Su saludo",
            greeting_none: "Quien llama oye el saludo estándar.",
            greeting_file: "Un saludo nuevo desde un archivo WAV:",
            greeting_upload: "Subir",
            greeting_remove: "Quitar",
            greeting_record: "Grabarlo aquí",
            greeting_stop: "Parar y guardar",
            greeting_refused: "Este archivo no puede ser su saludo",
            back: "Volver al mensaje",
        },
        Language::De => &Words {
            title: "Sprachnachricht",
            from: "Von",
            received: "Empfangen",
            length: "Länge",
            unknown: "Unbekannte Nummer",
            play: "Nachricht abspielen",
            no_audio: "Dieser Browser kann die Nachricht hier nicht abspielen:",
            download: "herunterladen",
            save: "Behalten",
            delete: "Löschen",
            saved: "Behalten: Sie bleibt, bis Sie sie löschen.",
            by_phone: "Sie können sie auch am Telefon abhören: Rufen Sie an unter",
            ask: "Diese Nachricht endgültig löschen?",
            yes: "Löschen",
            keep: "Behalten",
            deleted: "Die Nachricht ist gelöscht.",
            transcript: "Was gesagt wurde (automatische Abschrift, kann Fehler enthalten)",
            greeting: "Ihre Ansage",
            greeting_none: "Anrufer hören die Standardansage.",
            greeting_file: "Eine neue Ansage aus einer WAV-Datei:",
            greeting_upload: "Hochladen",
            greeting_remove: "Entfernen",
            greeting_record: "Hier aufnehmen",
            greeting_stop: "Beenden und behalten",
            greeting_refused: "Diese Datei kann nicht Ihre Ansage sein",
            back: "Zurück zur Nachricht",
        },
    }
}

/// What the message page shows.
#[derive(Debug, Clone)]
pub(crate) struct MessageView<'a> {
    /// The token, the last path segment of the page's own URL (relative links use it).
    pub token: &'a str,
    pub caller: Option<PhoneNumber>,
    /// As a person reads it, e.g. `2026-11-30 14:05 UTC`.
    pub received: &'a str,
    /// RFC 3339, for `<time datetime>`.
    pub received_iso: &'a str,
    pub duration_ms: u64,
    pub link_number: PhoneNumber,
    pub saved: bool,
    /// The recogniser's words (cleaned when they came), once there are any.
    pub transcript: Option<&'a str>,
    /// The recipient has a greeting of their own.
    pub greeting: bool,
    /// `messages.greeting_max_seconds`: a recording in the browser stops there.
    pub greeting_max: u32,
}

/// Escapes text for HTML content and attribute values.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn doc(lang: Language, title: &str, body: &str, script: bool) -> String {
    format!(
        "<!doctype html><html lang=\"{}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex,nofollow\">\
         <meta name=\"referrer\" content=\"no-referrer\">\
         <title>{}</title><style>{STYLE}</style></head><body><main>{body}</main>{}</body></html>",
        lang.as_str(),
        esc(title),
        if script {
            format!("<script>{SCRIPT}</script>")
        } else {
            String::new()
        }
    )
}

/// `m:ss`.
fn length(ms: u64) -> String {
    let s = ms.div_ceil(1000);
    format!("{}:{:02}", s / 60, s % 60)
}

/// The message page: caller, time, length, the player, Save and Delete.
pub(crate) fn message(v: &MessageView<'_>, lang: Language) -> String {
    let w = words(lang);
    let from = v
        .caller
        .map_or_else(|| w.unknown.to_string(), |c| c.to_string());
    let t = esc(v.token);
    // Saved: the page says so instead of offering Save again.
    let (done, save) = if v.saved {
        (
            format!("<p class=\"done\" role=\"status\">{}</p>", esc(w.saved)),
            String::new(),
        )
    } else {
        (
            String::new(),
            format!(
                "<form method=\"post\" action=\"{t}/save\"><button type=\"submit\" id=\"save\">{}</button></form>",
                esc(w.save)
            ),
        )
    };
    // Under the player, escaped like every other value: the recogniser is not trusted.
    let said = v.transcript.map_or_else(String::new, |t| {
        format!(
            "<figure id=\"transcript\"><figcaption>{}</figcaption><blockquote>{}</blockquote></figure>",
            esc(w.transcript),
            esc(t)
        )
    });
    let body = format!(
        "<h1>{title}</h1>\
         <dl><dt>{lf}</dt><dd id=\"caller\">{from}</dd>\
         <dt>{lr}</dt><dd><time id=\"received\" datetime=\"{iso}\">{at}</time></dd>\
         <dt>{ll}</dt><dd id=\"length\">{len}</dd></dl>\
         <audio id=\"player\" controls preload=\"none\" src=\"{t}/audio\" aria-label=\"{play}\">\
         {no_audio} <a href=\"{t}/audio\" download>{download}</a></audio>\
         {said}\
         {done}\
         <div class=\"row\">\
         {save}\
         <form method=\"post\" action=\"{t}/delete\"><button type=\"submit\" class=\"stop\" id=\"delete\">{delete}</button></form>\
         </div>\
         <p class=\"note\">{by_phone} <a href=\"tel:{link}\">{link}</a>.</p>\
         {greeting}",
        title = esc(w.title),
        lf = esc(w.from),
        lr = esc(w.received),
        ll = esc(w.length),
        from = esc(&from),
        iso = esc(v.received_iso),
        at = esc(v.received),
        len = length(v.duration_ms),
        play = esc(w.play),
        no_audio = esc(w.no_audio),
        download = esc(w.download),
        delete = esc(w.delete),
        by_phone = esc(w.by_phone),
        link = v.link_number,
        greeting = greeting_section(&t, v.greeting, v.greeting_max, w),
    );
    doc(lang, &format!("{} – {from}", w.title), &body, true)
}

/// "Your greeting": the current one and Remove, or that callers hear the standard one; a
/// form that uploads a WAV file (no script needed).
/// With script, a button records one in the browser (MediaRecorder, decoded by the browser
/// and sent as a WAV).
fn greeting_section(t: &str, has: bool, max: u32, w: &Words) -> String {
    let current = if has {
        format!(
            "<audio id=\"greeting-player\" controls preload=\"none\" src=\"{t}/greeting\" aria-label=\"{g}\"></audio>\
             <form method=\"post\" action=\"{t}/greeting/delete\"><button type=\"submit\" class=\"plain\" id=\"greeting-remove\">{rm}</button></form>",
            g = esc(w.greeting),
            rm = esc(w.greeting_remove),
        )
    } else {
        format!(
            "<p class=\"note\" id=\"greeting-none\">{}</p>",
            esc(w.greeting_none)
        )
    };
    format!(
        "<section id=\"greeting\" data-record=\"{rec}\" data-stop=\"{stop}\" data-max=\"{max}\"><h2>{g}</h2>{current}\
         <form method=\"post\" action=\"{t}/greeting\" enctype=\"multipart/form-data\">\
         <label for=\"greeting-file\">{file}</label>\
         <input type=\"file\" id=\"greeting-file\" name=\"greeting\" accept=\".wav,audio/wav\" required>\
         <button type=\"submit\" id=\"greeting-upload\">{up}</button></form></section>",
        g = esc(w.greeting),
        file = esc(w.greeting_file),
        up = esc(w.greeting_upload),
        rec = esc(w.greeting_record),
        stop = esc(w.greeting_stop),
    )
}

/// An upload that cannot be a greeting: what is wrong, and the way back.
pub(crate) fn greeting_refused(token: &str, detail: &str, lang: Language) -> String {
    let w = words(lang);
    let body = format!(
        "<h1 id=\"greeting-refused\">{title}</h1><p>{detail}</p><p><a href=\"../{t}\">{back}</a></p>",
        title = esc(w.greeting_refused),
        detail = esc(detail),
        back = esc(w.back),
        t = esc(token),
    );
    doc(lang, w.greeting_refused, &body, false)
}

/// Delete asks once: this page, whose button posts `confirm=yes`.
pub(crate) fn confirm_delete(token: &str, lang: Language) -> String {
    let w = words(lang);
    // The form posts to `<token>/delete` relative to `/m/<token>/delete`, i.e. itself.
    let body = format!(
        "<h1>{ask}</h1><div class=\"row\">\
         <form method=\"post\" action=\"delete\"><input type=\"hidden\" name=\"confirm\" value=\"yes\">\
         <button type=\"submit\" class=\"stop\" id=\"confirm\">{yes}</button></form>\
         <form method=\"get\" action=\"../{t}\"><button type=\"submit\" class=\"plain\" id=\"keep\">{keep}</button></form>\
         </div>",
        ask = esc(w.ask),
        yes = esc(w.yes),
        keep = esc(w.keep),
        t = esc(token),
    );
    doc(lang, w.ask, &body, false)
}

/// After a delete.
pub(crate) fn deleted(lang: Language) -> String {
    let w = words(lang);
    doc(
        lang,
        w.deleted,
        &format!("<h1 id=\"deleted\">{}</h1>", esc(w.deleted)),
        false,
    )
}

/// A wrong, expired or deleted link: the same bytes every time.
pub(crate) static NOT_FOUND: LazyLock<String> = LazyLock::new(|| {
    doc(
        Language::En,
        "Message not found",
        "<h1>Message not found</h1>\
         <p>This link does not open a message: it may have been deleted or have expired.</p>\
         <p lang=\"fr\">Ce lien n'ouvre aucun message : il a peut-être été supprimé ou a expiré.</p>\
         <p lang=\"es\">Este enlace no abre ningún mensaje: puede haberse borrado o caducado.</p>\
         <p lang=\"de\">Dieser Link öffnet keine Nachricht: Sie wurde vielleicht gelöscht oder ist abgelaufen.</p>",
        false,
    )
});

/// The server holding the message does not answer.
pub(crate) static UNAVAILABLE: LazyLock<String> = LazyLock::new(|| {
    doc(
        Language::En,
        "Try again shortly",
        "<h1>Try again shortly</h1>\
         <p>The server that keeps this message is not answering right now. Your message is safe; \
         please reload this page in a minute.</p>\
         <p lang=\"fr\">Le serveur de ce message ne répond pas pour l'instant. Réessayez dans une minute.</p>\
         <p lang=\"es\">El servidor de este mensaje no responde ahora. Inténtelo de nuevo en un minuto.</p>\
         <p lang=\"de\">Der Server dieser Nachricht antwortet gerade nicht. Versuchen Sie es in einer Minute erneut.</p>",
        false,
    )
});

/// Too many wrong links from one source.
pub(crate) static TOO_MANY: LazyLock<String> = LazyLock::new(|| {
    doc(
        Language::En,
        "Too many attempts",
        "<h1>Too many attempts</h1><p>Too many links that open no message came from your network. \
         Try again in a minute.</p>",
        false,
    )
});

/// A form posted from another site.
pub(crate) static FORBIDDEN: LazyLock<String> = LazyLock::new(|| {
    doc(
        Language::En,
        "Not allowed",
        "<h1>Not allowed</h1><p>This request did not come from the message's own page.</p>",
        false,
    )
});

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> MessageView<'static> {
        MessageView {
            token: "s1.AbCdEfGhIjKlMnOpQr-_",
            caller: PhoneNumber::parse_e164("+15551230001"),
            received: "2026-11-30 14:05 UTC",
            received_iso: "2026-11-30T14:05:00Z",
            duration_ms: 23_400,
            link_number: PhoneNumber::parse_e164("+18005550100").unwrap(),
            saved: false,
            transcript: None,
            greeting: false,
            greeting_max: 30,
        }
    }

    #[test]
    fn the_page_is_small_and_names_caller_time_length_and_actions() {
        for lang in [Language::En, Language::Fr, Language::Es, Language::De] {
            let p = message(&view(), lang);
            // docs/http.md and the README say "about 5.3 KB".
            assert!(p.len() < 6 * 1024, "{} bytes", p.len());
            assert!(p.contains(&format!("<html lang=\"{}\"", lang.as_str())));
            assert!(p.contains("+15551230001") && p.contains("0:24"));
            assert!(p.contains("datetime=\"2026-11-30T14:05:00Z\""));
            assert!(p.contains("src=\"s1.AbCdEfGhIjKlMnOpQr-_/audio\""));
            assert!(p.contains("action=\"s1.AbCdEfGhIjKlMnOpQr-_/save\""));
            assert!(
                !p.contains("http://") && !p.contains("https://"),
                "no external asset"
            );
        }
        let saved = message(
            &MessageView {
                saved: true,
                caller: None,
                ..view()
            },
            Language::En,
        );
        assert!(saved.contains("role=\"status\"") && saved.contains("Unknown number"));
        assert!(!saved.contains("id=\"save\""), "saved: no Save button");
        assert!(
            !saved.contains("id=\"transcript\""),
            "no transcript: no quote"
        );
        // A transcript shows under the player, escaped: the recogniser is not trusted.
        let said = message(
            &MessageView {
                transcript: Some("Call me <script>x</script> back"),
                ..view()
            },
            Language::De,
        );
        let at = |s: &str| said.find(s).unwrap();
        assert!(at("id=\"player\"") < at("id=\"transcript\""));
        assert!(said.contains("Call me &lt;script&gt;x&lt;/script&gt; back"));
        assert!(said.contains("automatische Abschrift"));
    }

    #[test]
    fn the_policy_allows_exactly_the_inline_style_and_script() {
        let p = message(&view(), Language::En);
        let style = p
            .split("<style>")
            .nth(1)
            .unwrap()
            .split("</style>")
            .next()
            .unwrap();
        let script = p
            .split("<script>")
            .nth(1)
            .unwrap()
            .split("</script>")
            .next()
            .unwrap();
        assert!(CSP.contains(&format!("'sha256-{}'", sha256_b64(style))));
        assert!(CSP.contains(&format!("'sha256-{}'", sha256_b64(script))));
        assert!(CSP.starts_with("default-src 'none'"));
        assert_eq!(*NOT_FOUND, *NOT_FOUND, "one 404 page");
        assert_eq!(
            esc("<a href=\"x\">'&"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;"
        );
    }
}
