// Sends one message under the id the runner chose (and committed) beforehand, the way
// whatsapp-web.js's WWebJS.sendMessage / processMediaData do, except that the message key's id is
// ours instead of WAWebMsgKey.newId(): that is what lets a recovering runner ask whether it exists.
// Every user-supplied value arrives here as a JSON argument; `lib` is lib.js.
//
// Returns the key and chat as the page stored them (today's page may file the message under the
// chat's LID or its phone number: lib.findSent), or {error: 'no_chat'}.
async function (lib, chatId, id, kind, body, media, options, location, data) {
    const req = lib.req;
    const Collections = req('WAWebCollections');
    const WidFactory = req('WAWebWidFactory');
    options = options || {};

    const report = (msg, extra) => Object.assign({
        id: lib.keyStr(msg.id),
        chat: lib.widStr(msg.id.remote),
        ack: Number(msg.ack),
    }, extra || {});

    // A send of this id still running in this page (the runner timed out on it): join it.
    const running = lib.inflight.get(id);
    if (running) return Object.assign({}, await running, { existed: true });

    // Registered before the first await, so a second call can never slip in between.
    const work = (async () => {
        const chatWid = WidFactory.createWid(chatId);
        // At most once: a message of ours under this id, filed under either wid of the chat, is
        // never sent again.
        const stale = [];
        const existing = await lib.findSent(chatWid, id, stale);
        if (existing) return report(existing, { existed: true });
        lib.dropStale(stale);

        // A contact whose chat moved to its LID is written to there (wa-js#3374: "always send to
        // @lid"); a phone-number key would be refused like WhatsApp's error 463.
        const isPn = typeof chatWid.isLid === 'function' && !chatWid.isLid() && chatWid.isUser();
        const target = (isPn && lib.sibling(chatWid)) || chatWid;
        const chat = Collections.Chat.get(target) ||
            ((await req('WAWebFindChatAction').findOrCreateLatestChat(target)) || {}).chat;
        if (!chat) return { error: 'no_chat' };

        const { getMaybeMeLidUser, getMaybeMePnUser } = req('WAWebUserPrefsMeUser');
        const lidUser = getMaybeMeLidUser();
        const meUser = getMaybeMePnUser();
        let from = chat.id.isLid() ? lidUser : meUser;
        let participant;
        if (typeof chat.id.isGroup === 'function' && chat.id.isGroup()) {
            from = chat.groupMetadata && chat.groupMetadata.isLidAddressingMode ? lidUser : meUser;
            participant = WidFactory.asUserWidOrThrow(from);
        }
        const MsgKey = req('WAWebMsgKey');
        const key = new MsgKey({ from: from, to: chat.id, id: id, participant: participant, selfDir: 'out' });
        let content = body == null ? '' : body;
        let mediaOptions = {};
        if (media) {
            // WWebJS.mediaInfoToFile + processMediaData.
            const binary = window.atob(media.data);
            const bytes = new Uint8Array(binary.length);
            for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
            let file = new File([new Blob([bytes], { type: media.mimetype })], media.filename || 'file', {
                type: media.mimetype,
                lastModified: Date.now(),
            });
            if (kind === 'sticker') {
                // As whatsapp-web.js's WWebJS.toStickerData: the page's own
                // WAWebImageUtils.toWebpSticker turns the image into a sticker WebP; one that is
                // already a 512x512 WebP goes as it is. An image the page cannot draw is refused.
                let bitmap;
                try {
                    bitmap = await createImageBitmap(file);
                } catch (e) {
                    return { error: 'bad_image', message: String((e && e.message) || e) };
                }
                const ready = media.mimetype === 'image/webp' && bitmap.width === 512 && bitmap.height === 512;
                if (typeof bitmap.close === 'function') bitmap.close();
                if (!ready) {
                    const webp = await req('WAWebImageUtils').toWebpSticker(file);
                    file = new File([webp], 'sticker.webp', { type: 'image/webp', lastModified: Date.now() });
                }
                media = { mimetype: 'image/webp', filename: null };
            }
            const OpaqueData = req('WAWebMediaOpaqueData');
            const opaqueData = await OpaqueData.createFromData(file, media.mimetype);
            const mediaParams = {
                asSticker: kind === 'sticker',
                asGif: false,
                isPtt: kind === 'voice',
                asDocument: kind === 'document',
            };
            const mediaPrep = req('WAWebPrepRawMedia').prepRawMedia(opaqueData, mediaParams);
            const mediaData = await mediaPrep.waitForPrep();
            const mediaObject = req('WAWebMediaStorage').getOrCreateMediaObject(mediaData.filehash);
            const mediaType = req('WAWebMmsMediaTypes').msgToMediaType({
                type: mediaData.type,
                isGif: mediaData.isGif,
                isNewsletter: false,
            });
            if (!mediaData.filehash) throw new Error('media-fault: filehash undefined');
            if (!(mediaData.mediaBlob instanceof OpaqueData)) {
                mediaData.mediaBlob = await OpaqueData.createFromData(mediaData.mediaBlob, mediaData.mediaBlob.type);
            }
            mediaData.renderableUrl = mediaData.mediaBlob.url();
            mediaObject.consolidate(mediaData.toJSON());
            mediaData.mediaBlob.autorelease();
            const shouldUseMediaCache = req('WAWebMediaDataUtils').shouldUseMediaCache(
                req('WAWebMmsMediaTypes').castToV4(mediaObject.type),
            );
            if (shouldUseMediaCache && mediaData.mediaBlob instanceof OpaqueData) {
                req('WAWebMediaInMemoryBlobCache').InMemoryMediaBlobCache.put(
                    mediaObject.filehash,
                    mediaData.mediaBlob.formData(),
                );
            }
            const uploaded = await req('WAWebMediaMmsV4Upload').uploadMedia({
                mimetype: mediaData.mimetype,
                mediaObject: mediaObject,
                mediaType: mediaType,
            });
            const mediaEntry = uploaded.mediaEntry;
            if (!mediaEntry) throw new Error('upload failed: media entry was not created');
            mediaData.set({
                clientUrl: mediaEntry.mmsUrl,
                deprecatedMms3Url: mediaEntry.deprecatedMms3Url,
                directPath: mediaEntry.directPath,
                mediaKey: mediaEntry.mediaKey,
                mediaKeyTimestamp: mediaEntry.mediaKeyTimestamp,
                filehash: mediaObject.filehash,
                encFilehash: mediaEntry.encFilehash,
                uploadhash: mediaEntry.uploadHash,
                size: mediaObject.size,
                streamingSidecar: mediaEntry.sidecar,
                firstFrameSidecar: mediaEntry.firstFrameSidecar,
                mediaHandle: null,
            });
            mediaOptions = mediaData;
            mediaOptions.caption = body == null ? undefined : body;
            content = mediaOptions.preview;
        }

        let extra = {};
        if (kind === 'location' && location) {
            // WWebJS.sendMessage's locationOptions: a `location` message whose `loc` is the
            // Location's description (name and address on two lines, as whatsapp-web.js's
            // Location builds it), no body.
            const loc = [location.name, location.address].filter((t) => t != null && t !== '').join('\n');
            extra = {
                type: 'location',
                loc: loc || undefined,
                lat: location.latitude,
                lng: location.longitude,
            };
            content = undefined;
        } else if (kind === 'contact' && data && data.type === 'contact') {
            // WWebJS.sendMessage's vcardOptions: one card is a `vcard` message whose body is the
            // vCard and vcardFormattedName its name; several are one `multi_vcard` message with
            // vcardList [{displayName, vcard}] (as WAWebFrontendVcardUtils.vcardFromContactModel
            // returns them) and no body.
            const cards = data.cards || [];
            if (cards.length === 1) {
                extra = { type: 'vcard', vcardFormattedName: cards[0].display_name };
                content = cards[0].vcard;
            } else {
                extra = {
                    type: 'multi_vcard',
                    vcardList: cards.map((c) => ({ displayName: c.display_name, vcard: c.vcard })),
                };
                content = null;
            }
        } else if (kind === 'poll' && data && data.type === 'poll') {
            // WAWebPollsSendPollCreationMsgAction.createPollCreationMsgData's fields (also
            // WWebJS.sendMessage's pollOptions): type poll_creation, options {name, localId} in
            // order, selectable count (0 = any), a fresh 32-byte messageSecret for the votes.
            extra = {
                kind: 'pollCreation',
                type: 'poll_creation',
                pollName: data.question,
                pollOptions: data.choices.map((name, i) => ({ name: name, localId: i })),
                pollSelectableOptionsCount: data.selectable_count,
                messageSecret: self.crypto.getRandomValues(new Uint8Array(32)),
            };
            content = undefined;
        } else if (!media && options.link_preview !== false) {
            const link = req('WALinkify').findLink(content);
            if (link) {
                let preview = await req('WAWebLinkPreviewChatAction').getLinkPreview(link);
                if (preview && preview.data) {
                    preview = preview.data;
                    preview.preview = true;
                    preview.subtype = 'url';
                    extra = Object.assign(extra, preview);
                }
            }
        }

        let quoted = {};
        if (options.reply_to) {
            let q = Collections.Msg.get(options.reply_to);
            if (!q && typeof Collections.Msg.getMessagesById === 'function') {
                const r = await Collections.Msg.getMessagesById([options.reply_to]);
                q = r && r.messages && r.messages[0];
            }
            if (q) {
                const ReplyUtils = req('WAWebMsgReply');
                const canReply = ReplyUtils && ReplyUtils.canReplyMsg ? ReplyUtils.canReplyMsg(q.unsafe()) : q.canReply();
                if (canReply) quoted = q.msgContextInfo(chat);
            }
        }

        const ephemeralFields = req('WAWebGetEphemeralFieldsMsgActionsUtils').getEphemeralFields(chat);
        const message = Object.assign(
            {
                caption: media && body != null ? body : undefined,
                isCaptionByUser: !!(media && body),
                // WWebJS.sendMessage: options.mentionedJidList mapped through createWid.
                mentionedJidList: (options.mentions || []).map((w) => WidFactory.createWid(w)),
                id: key,
                ack: 0,
                body: content,
                from: from,
                to: chat.id,
                local: true,
                self: 'out',
                t: Math.floor(Date.now() / 1000),
                isNewMsg: true,
                type: 'chat',
            },
            extra,
            ephemeralFields,
            mediaOptions,
            mediaOptions.toJSON ? mediaOptions.toJSON() : {},
            quoted,
        );

        const [msgPromise, sendResultPromise] = req('WAWebSendMsgChatAction').addAndSendMsgToChat(chat, message);
        const added = await msgPromise;
        const result = await sendResultPromise;
        // Read back where the page filed it: under our key, or under the chat's sibling wid.
        const sent = (await lib.findSent(chat.id, id)) || added;
        return report(sent || { id: key, ack: 0 }, {
            result: result && result.messageSendResult != null ? String(result.messageSendResult) : null,
        });
    })();
    lib.inflight.set(id, work);
    const forget = () => {
        if (lib.inflight.get(id) === work) lib.inflight.delete(id);
    };
    // Bounded: a page lives for days.
    if (lib.inflight.size > 10000) lib.inflight.delete(lib.inflight.keys().next().value);
    try {
        const r = await work;
        // Not accepted: no longer ours to join (a retry looks again from scratch).
        if (r.error || r.ack < 0 || (r.result && r.result !== 'OK')) forget();
        return r;
    } catch (e) {
        forget();
        throw e;
    }
}
