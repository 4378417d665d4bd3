/**
 * aifhub's bar inside JupyterLab: the course, GPU- or CPU-hours left and when they reset, the time left in the
 * session, waitlist and quota or idle warnings, the instructors' announcements, a "Raise hand" button with a short
 * question, and the learner's accept or end of a helper's request.
 *
 * It talks to the aifhub service only through this server's `aifhub/bar/` handler (a server extension), which
 * forwards a few learner endpoints with the server's own token and answers the server's owner only: the page never
 * holds a token, and a helper let into this JupyterLab cannot accept or end help in the learner's name.
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { PageConfig, URLExt } from '@jupyterlab/coreutils';
import { Widget } from '@lumino/widgets';

type Json = { [key: string]: any };
const POLL_MS = 5000;

function xsrf(): string {
  const m = document.cookie.match('\\b_xsrf=([^;]*)\\b');
  return m ? decodeURIComponent(m[1]) : '';
}

async function call(method: string, path: string, body?: Json): Promise<Json> {
  const url = URLExt.join(PageConfig.getBaseUrl(), 'aifhub/bar', path);
  const resp = await fetch(url, {
    method,
    credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json', 'X-XSRFToken': xsrf() },
    body: body === undefined ? undefined : JSON.stringify(body)
  });
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    throw new Error(data.message || `aifhub answered ${resp.status}`);
  }
  return data;
}

function hours(h: number): string {
  return h >= 1 ? `${h.toFixed(1)} h` : `${Math.round(h * 60)} min`;
}

function el(tag: string, text: string, cls?: string): HTMLElement {
  const e = document.createElement(tag);
  e.textContent = text;
  if (cls) {
    e.className = cls;
  }
  return e;
}

function button(text: string, onClick: () => void): HTMLButtonElement {
  const b = document.createElement('button');
  b.type = 'button';
  b.className = 'jp-mod-styled';
  b.textContent = text;
  b.addEventListener('click', onClick);
  return b;
}

class AifhubBar extends Widget {
  private context: Json = {};
  private live: HTMLElement;
  private body: HTMLElement;
  private lastAnnouncement = 0;

  constructor() {
    super();
    this.id = 'aifhub-bar';
    this.addClass('aifhub-bar');
    this.node.setAttribute('role', 'region');
    this.node.setAttribute('aria-label', 'aifhub');
    this.body = document.createElement('div');
    this.body.style.display = 'contents';
    this.live = el('span', '', 'aifhub-hide');
    this.live.setAttribute('aria-live', 'polite');
    this.node.append(this.body, this.live);
  }

  async start(): Promise<void> {
    try {
      this.context = await call('GET', 'context');
    } catch (err) {
      this.hide();
      return; // not an aifhub sandbox, or not its owner (a helper): no bar
    }
    await this.refresh();
    window.setInterval(() => void this.refresh(), POLL_MS);
  }

  async refresh(): Promise<void> {
    let me: Json;
    try {
      me = await call('GET', 'me');
    } catch (err) {
      this.render([el('span', `aifhub: ${(err as Error).message}`, 'aifhub-warn')]);
      return;
    }
    const courseId: string = this.context.course;
    const course: Json = (me.courses || []).find((c: Json) => c.id === courseId) || {};
    const parts: HTMLElement[] = [el('strong', course.title || courseId || 'aifhub')];
    const learner = (course.quota || []).find((q: Json) => q.scope === 'learner') || (course.quota || [])[0];
    if (learner) {
      const unit = learner.unit === 'gpu' ? 'GPU-hours' : 'CPU-hours';
      const reset = learner.resets_at ? `, resets ${new Date(learner.resets_at).toLocaleString()}` : '';
      parts.push(el('span', `${hours(learner.remaining_hours)} ${unit} left${reset}`));
    }
    const max = course.sandbox && course.sandbox.max_session;
    if (max && this.context.started) {
      const m = /^(?:(\d+)h)?(?:(\d+)m)?$/.exec(max) || [];
      const limit = (Number(m[1] || 0) * 3600 + Number(m[2] || 0) * 60) * 1000;
      const left = this.context.started * 1000 + limit - Date.now();
      if (limit > 0) {
        parts.push(el('span', `session: ${hours(Math.max(0, left) / 3.6e6)} left`));
      }
    }
    if (course.waitlist) {
      parts.push(el('span', `waiting for a GPU: place ${course.waitlist.position}`, 'aifhub-warn'));
    }
    if (me.notice) {
      parts.push(el('span', String(me.notice).replace(/<[^>]*>/g, ''), 'aifhub-warn'));
    }
    const anns: Json[] = (me.announcements || {})[courseId] || [];
    if (anns.length) {
      const a = anns[0];
      const note = el('span', `Announcement: ${a.text}`, 'aifhub-ann');
      parts.push(note);
      if (a.id !== this.lastAnnouncement) {
        if (this.lastAnnouncement) {
          this.live.textContent = `New announcement: ${a.text}`;
        }
        this.lastAnnouncement = a.id;
      }
    }
    parts.push(...this.helpControls(courseId, (me.hands || {})[courseId]));
    this.render(parts);
  }

  private helpControls(courseId: string, hand: Json | undefined): HTMLElement[] {
    const act = (method: string, path: string, body?: Json, said?: string) => async () => {
      try {
        await call(method, path, body);
        if (said) {
          this.live.textContent = said;
        }
      } catch (err) {
        this.live.textContent = (err as Error).message;
      }
      await this.refresh();
    };
    if (!courseId) {
      return [];
    }
    if (!hand) {
      const label = el('label', 'Question', 'aifhub-hide');
      const input = document.createElement('input');
      input.id = 'aifhub-question';
      input.maxLength = 500;
      input.placeholder = 'Short question (optional)';
      label.setAttribute('for', input.id);
      const raise = button('Raise hand', () =>
        void act('POST', 'me/hands', { course: courseId, question: input.value }, 'Your hand is raised.')()
      );
      input.addEventListener('keydown', ev => {
        if (ev.key === 'Enter') {
          raise.click();
        }
      });
      return [label, input, raise];
    }
    const out: HTMLElement[] = [];
    const states: Json = {
      raised: 'Hand raised: waiting for a helper.',
      taken: `${hand.helper} is coming.`,
      asked: `${hand.helper} asks to look inside your sandbox (they could run code and change files).`,
      shared: `${hand.helper} has access for ${Math.max(1, Math.round((hand.share_left_s || 0) / 60))} min.`
    };
    out.push(el('span', states[hand.state] || hand.state, hand.state === 'asked' ? 'aifhub-warn' : undefined));
    if (hand.state === 'asked') {
      out.push(button('Accept', act('POST', `me/hands/${courseId}/accept`, undefined, 'The helper may look in now.')));
      out.push(button('Decline', act('POST', `me/hands/${courseId}/end`, undefined, 'Declined.')));
    } else if (hand.state === 'shared') {
      out.push(button('End access', act('POST', `me/hands/${courseId}/end`, undefined, 'The helper no longer has access.')));
    }
    out.push(button('Lower hand', act('DELETE', `me/hands/${courseId}`, undefined, 'Your hand is lowered.')));
    return out;
  }

  private render(parts: HTMLElement[]): void {
    const focused = document.activeElement;
    const keep = focused && this.body.contains(focused) ? (focused as HTMLElement).textContent : null;
    this.body.replaceChildren(...parts);
    if (keep !== null) {
      // keyboard users keep their place across refreshes
      const same = Array.from(this.body.querySelectorAll('button')).find(b => b.textContent === keep);
      (same || (this.body.querySelector('button, input') as HTMLElement | null))?.focus();
    }
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'aifhub-bar:plugin',
  description: "aifhub's bar: course, hours left, announcements, Raise hand",
  autoStart: true,
  activate: (app: JupyterFrontEnd) => {
    const bar = new AifhubBar();
    app.shell.add(bar, 'top', { rank: 1000 });
    void bar.start();
  }
};

export default plugin;
