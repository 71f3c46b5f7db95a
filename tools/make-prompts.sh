#!/usr/bin/env bash
# Records the voice prompts once with espeak-ng and converts them to 8 kHz mono 16-bit PCM
# WAV with sox: English in crates/media/prompts/, Spanish, French and German in its es/,
# fr/ and de/. The WAV files are committed; run this again only to change a prompt:
#   apt-get install -y espeak-ng sox && tools/make-prompts.sh [en es fr de]
# (no argument: every language). ONLY="name1 name2" records just those prompts and leaves
# the others as committed (espeak-ng and sox of another release say them a little
# differently).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)/crates/media/prompts"
langs=("$@")
[ ${#langs[@]} -gt 0 ] || langs=(en es fr de)

say() { # name text
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $1 "* ]]; then return; fi
  espeak-ng -v "$voice" -s 150 -w "$out/$1.raw.wav" "$2"
  # Leading and trailing silence trimmed so that digits run together naturally.
  sox "$out/$1.raw.wav" -r 8000 -c 1 -b 16 -e signed-integer "$out/$1.wav" \
    silence 1 0.02 1% reverse silence 1 0.02 1% reverse norm -3 pad 0 0.05
  rm -f "$out/$1.raw.wav"
}

numbers() {
  for d in 0 1 2 3 4 5 6 7 8 9; do say "digit-$d" "$d"; done
  for n in $(seq 0 59); do say "number-$n" "$n"; done
}

months() { # twelve names
  local i=1
  for m in "$@"; do say "month-$i" "$m"; i=$((i + 1)); done
}

for lang in "${langs[@]}"; do
  case "$lang" in
    en)
      voice=en-us out="$root"
      mkdir -p "$out"
      say you-have-reached "You have reached"
      say leave-message "Please leave a message after the tone."
      say message-from "Message from"
      say unknown-caller "an unknown number"
      say received "received"
      say at "at"
      say enter-code "Please enter the access code from your text message."
      say wrong-code "That code is not right."
      say locked-out "Too many wrong codes. Please try again later."
      say no-messages "There are no messages for you on this number."
      say options "To hear the message again, press 1. To delete it, press 7. To save it, press 9. For the next message, press pound."
      say deleted "Message deleted."
      say saved "Message saved."
      say no-more "No more messages."
      say goodbye "Goodbye."
      say greeting-record "After the tone, record your greeting. Press pound when you are done."
      say greeting-is "This is your greeting."
      say greeting-options "To keep it, press 1 or hang up. To record it again, press 2. To remove it, press 3."
      say greeting-saved "Your greeting is saved."
      say greeting-removed "Your greeting is removed. Callers hear the standard greeting."
      say own-phone-only "Your greeting can only be changed from your own phone."
      numbers
      months January February March April May June July August September October November December
      ;;
    es)
      voice=es out="$root/es"
      mkdir -p "$out"
      say you-have-reached "Ha llamado al"
      say leave-message "Por favor, deje su mensaje después de la señal."
      say message-from "Mensaje de"
      say unknown-caller "un número desconocido"
      say received "recibido el"
      say at "a las"
      say enter-code "Por favor, marque la clave de acceso de su mensaje de texto."
      say wrong-code "La clave no es correcta."
      say locked-out "Demasiadas claves incorrectas. Inténtelo más tarde."
      say no-messages "No hay mensajes para usted en este número."
      say options "Para escuchar el mensaje de nuevo, pulse 1. Para borrarlo, pulse 7. Para guardarlo, pulse 9. Para el siguiente mensaje, pulse la tecla almohadilla."
      say deleted "Mensaje borrado."
      say saved "Mensaje guardado."
      say no-more "No hay más mensajes."
      say goodbye "Adiós."
      say greeting-record "Después de la señal, grabe su saludo. Pulse almohadilla al terminar."
      say greeting-is "Este es su saludo."
      say greeting-options "Para conservarlo, pulse 1 o cuelgue. Para grabarlo de nuevo, pulse 2. Para borrarlo, pulse 3."
      say greeting-saved "Su saludo está guardado."
      say greeting-removed "Su saludo está borrado. Se oirá el saludo estándar."
      say own-phone-only "Su saludo solo se puede cambiar desde su propio teléfono."
      numbers
      # "el 3 de marzo": the day comes first, the month carries its "de".
      months "de enero" "de febrero" "de marzo" "de abril" "de mayo" "de junio" "de julio" \
        "de agosto" "de septiembre" "de octubre" "de noviembre" "de diciembre"
      ;;
    fr)
      voice=fr-fr out="$root/fr"
      mkdir -p "$out"
      say you-have-reached "Vous êtes bien au"
      say leave-message "Veuillez laisser un message après le bip."
      say message-from "Message de"
      say unknown-caller "un numéro inconnu"
      say received "reçu le"
      say at "à"
      say hours "heures"
      say enter-code "Veuillez saisir le code d'accès reçu par SMS."
      say wrong-code "Ce code n'est pas correct."
      say locked-out "Trop de codes erronés. Veuillez réessayer plus tard."
      say no-messages "Il n'y a pas de message pour vous sur ce numéro."
      say options "Pour réécouter le message, tapez 1. Pour l'effacer, tapez 7. Pour le garder, tapez 9. Pour le message suivant, tapez dièse."
      say deleted "Message effacé."
      say saved "Message enregistré."
      say no-more "Il n'y a plus de message."
      say goodbye "Au revoir."
      say greeting-record "Après le bip, enregistrez votre annonce. Tapez dièse pour terminer."
      say greeting-is "Voici votre annonce."
      say greeting-options "Pour la garder, tapez 1 ou raccrochez. Pour l'enregistrer à nouveau, tapez 2. Pour la supprimer, tapez 3."
      say greeting-saved "Votre annonce est enregistrée."
      say greeting-removed "Votre annonce est supprimée. Vos correspondants entendront l'annonce standard."
      say own-phone-only "Votre annonce ne peut être changée que depuis votre propre téléphone."
      numbers
      months janvier février mars avril mai juin juillet août septembre octobre novembre décembre
      ;;
    de)
      voice=de out="$root/de"
      mkdir -p "$out"
      say you-have-reached "Sie sind verbunden mit"
      say leave-message "Bitte hinterlassen Sie eine Nachricht nach dem Signalton."
      say message-from "Nachricht von"
      say unknown-caller "einer unbekannten Nummer"
      say received "empfangen am"
      say at "um"
      say hours "Uhr"
      say enter-code "Bitte geben Sie den Zugangscode aus Ihrer SMS ein."
      say wrong-code "Dieser Code ist nicht richtig."
      say locked-out "Zu viele falsche Codes. Bitte versuchen Sie es später noch einmal."
      say no-messages "Für Sie gibt es auf dieser Nummer keine Nachrichten."
      say options "Um die Nachricht noch einmal zu hören, drücken Sie 1. Zum Löschen drücken Sie 7. Zum Speichern drücken Sie 9. Für die nächste Nachricht drücken Sie die Rautetaste."
      say deleted "Nachricht gelöscht."
      say saved "Nachricht gespeichert."
      say no-more "Keine weiteren Nachrichten."
      say goodbye "Auf Wiederhören."
      say greeting-record "Sprechen Sie nach dem Ton Ihre Ansage. Drücken Sie Raute, wenn Sie fertig sind."
      say greeting-is "Das ist Ihre Ansage."
      say greeting-options "Zum Behalten drücken Sie 1 oder legen Sie auf. Zum neu Aufnehmen drücken Sie 2. Zum Löschen drücken Sie 3."
      say greeting-saved "Ihre Ansage ist gespeichert."
      say greeting-removed "Ihre Ansage ist gelöscht. Anrufer hören die Standardansage."
      say own-phone-only "Ihre Ansage kann nur von Ihrem eigenen Telefon aus geändert werden."
      numbers
      months Januar Februar März April Mai Juni Juli August September Oktober November Dezember
      ;;
    *)
      echo "unknown language $lang: en, es, fr, de" >&2
      exit 1
      ;;
  esac
done
